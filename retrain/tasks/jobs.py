from celery import shared_task

from flywheel.models import Project
from retrain.jobs.lifecycle import job_create, jobs_reap_stale
from retrain.jobs.schedules import index_refresh_due, retraining_due
from retrain.models import Job


@shared_task
def reap_stale_jobs() -> dict:
    return jobs_reap_stale()


@shared_task
def start_due_jobs() -> list[int]:
    """The schedule: an index refresh where documents or approved corrections changed, and
    a training run where the policy's threshold of new examples is reached."""
    started = []
    for project in Project.objects.all():
        for kind, due in (
            (Job.Kind.INDEX_REFRESH, index_refresh_due),
            (Job.Kind.LORA_TRAINING, retraining_due),
        ):
            reason = due(project=project)
            if reason:
                job = job_create(project=project, kind=kind, trigger=Job.Trigger.SCHEDULE)
                job.progress_message = reason[:300]
                job.save(update_fields=["progress_message"])
                started.append(job.pk)
    return started
