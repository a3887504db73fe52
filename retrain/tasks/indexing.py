from celery import shared_task
from django.conf import settings

from config.celery import LONG_JOB_ACKNOWLEDGEMENT
from retrain.index_refresh import job as index_refresh
from retrain.jobs.lifecycle import job_run


@shared_task(
    **LONG_JOB_ACKNOWLEDGEMENT,
    soft_time_limit=settings.FLYWHEEL_TRAINING_TIME_LIMIT_SECONDS,
    time_limit=settings.FLYWHEEL_TRAINING_TIME_LIMIT_SECONDS + 300,
)
def run_index_refresh(job_id: int) -> str | None:
    return job_run(job_id=job_id, handler=index_refresh.run)
