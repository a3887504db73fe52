"""The training queue: one job at a time (its worker has concurrency 1).

Acknowledged as a job starts: should its worker die, the job's heartbeat stops and the
reaper queues it again (retrain/jobs/lifecycle.py); `job_run` ignores a delivery for a job
that is not queued, so a duplicate does nothing and a job never runs twice at once.
"""

from celery import shared_task
from django.conf import settings

from config.celery import LONG_JOB_ACKNOWLEDGEMENT
from retrain.evaluation import job as evaluation
from retrain.jobs.lifecycle import job_run
from retrain.training import job as training
from retrain.training import retriever_job

LONG_JOB = {
    **LONG_JOB_ACKNOWLEDGEMENT,
    "soft_time_limit": settings.FLYWHEEL_TRAINING_TIME_LIMIT_SECONDS,
    "time_limit": settings.FLYWHEEL_TRAINING_TIME_LIMIT_SECONDS + 300,
}


@shared_task(**LONG_JOB)
def run_lora_training(job_id: int) -> str | None:
    return job_run(job_id=job_id, handler=training.run)


@shared_task(**LONG_JOB)
def run_evaluation(job_id: int) -> str | None:
    return job_run(job_id=job_id, handler=evaluation.run)


@shared_task(**LONG_JOB)
def run_retriever_training(job_id: int) -> str | None:
    return job_run(job_id=job_id, handler=retriever_job.run)
