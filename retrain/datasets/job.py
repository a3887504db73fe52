from retrain.curation.policy import curation_policy_get
from retrain.datasets.snapshot import dataset_snapshot, dataset_version_eval_shortfall
from retrain.jobs.parameters import reject_unknown
from retrain.models import DatasetVersion, Job


def validate_parameters(values: dict) -> dict:
    reject_unknown(values)
    return {}


def run(job: Job, context) -> None:
    context.progress(10, "Freezing the curated examples")
    version, created = dataset_snapshot(
        project=job.project, trigger=DatasetVersion.Trigger.JOB, created_by=job.triggered_by
    )
    Job.objects.filter(pk=job.pk).update(dataset_version=version)
    context.record_metrics(dataset_version=version.number, created=created, **version.counts)
    context.log(f"Dataset v{version.number} {'created' if created else 'unchanged'}")
    shortfall = dataset_version_eval_shortfall(
        version=version,
        min_eval_examples=curation_policy_get(project=job.project).min_eval_examples,
    )
    if shortfall:
        context.log(f"Dataset v{version.number}: {shortfall}")
