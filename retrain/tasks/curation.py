from celery import shared_task

from config.celery import LONG_JOB_ACKNOWLEDGEMENT
from flywheel.models import Project
from retrain.curation.pipeline import interaction_curate as curate
from retrain.curation.pipeline import interactions_needing_curation
from retrain.datasets.snapshot import dataset_snapshot
from retrain.models import DatasetVersion


@shared_task
def interaction_curate(interaction_id: str) -> dict | None:
    summary = curate(interaction_id=interaction_id)
    return summary and {"curated": summary.curated, "removed": summary.removed}


@shared_task
def curation_sweep() -> int:
    """Re-enqueue interactions whose curation task was lost (Redis or a worker was down)."""
    stale = interactions_needing_curation()
    for interaction_ids in stale.values():
        for interaction_id in interaction_ids:
            interaction_curate.delay(str(interaction_id))
    return sum(len(ids) for ids in stale.values())


@shared_task
def datasets_snapshot_all() -> list[int]:
    """The scheduled snapshot: a new version for each project whose examples changed."""
    created = []
    for project in Project.objects.all():
        version, is_new = dataset_snapshot(project=project, trigger=DatasetVersion.Trigger.SCHEDULE)
        if is_new:
            created.append(version.pk)
    return created


@shared_task(**LONG_JOB_ACKNOWLEDGEMENT)
def run_dataset_snapshot(job_id: int) -> str | None:
    from retrain.datasets import job as snapshot
    from retrain.jobs.lifecycle import job_run

    return job_run(job_id=job_id, handler=snapshot.run)


@shared_task(**LONG_JOB_ACKNOWLEDGEMENT)
def run_recuration(job_id: int) -> str | None:
    from retrain.jobs import recuration
    from retrain.jobs.lifecycle import job_run

    return job_run(job_id=job_id, handler=recuration.run)
