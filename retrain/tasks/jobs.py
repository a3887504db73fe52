from celery import shared_task

from flywheel.models import Project
from retrain.jobs.lifecycle import jobs_reap_stale
from retrain.jobs.schedules import due_jobs_start


@shared_task
def reap_stale_jobs() -> dict:
    return jobs_reap_stale()


@shared_task
def start_due_jobs() -> list[int]:
    """The schedule: what `due_jobs_start` owes each project."""
    return [job.pk for project in Project.objects.all() for job in due_jobs_start(project=project)]
