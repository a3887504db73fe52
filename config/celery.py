"""The one Celery app. Configuration comes from Django settings (the CELERY_ names); what every
task shares — retries, acknowledgement, enqueueing through the outbox — is defined here."""

import os
import threading

import psycopg
import redis
from celery import Celery
from celery.contrib.django.task import DjangoTask
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)
from django.db import OperationalError as DatabaseOperationalError

from config.logging import task_log_context_bind, task_log_context_clear

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")

# Failures that pass: the database or Redis away for a moment. Anything else is a bug, and
# retrying it would only repeat it.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    DatabaseOperationalError,
    psycopg.OperationalError,
    redis.exceptions.ConnectionError,
)
# Retries wait 1, 2, 4 … seconds (with jitter) up to this; shorter than the broker's
# visibility timeout, or a waiting retry would be handed out twice.
RETRY_BACKOFF_MAX_SECONDS = 300
RETRY_MAX_ATTEMPTS = 8

# Long jobs (a Job row each) are acknowledged as they start. Their recovery is the job's
# lease: a heartbeat that the reaper watches (retrain/jobs/lifecycle.py), which retries a job
# whose worker died, and a claim that lets one delivery run it at a time. Unacknowledged, an
# hours-long job would come back to the queue after the broker's visibility timeout, which
# short tasks need short so that theirs come back in minutes.
LONG_JOB_ACKNOWLEDGEMENT = {"acks_late": False, "reject_on_worker_lost": False}


class FlywheelTask(DjangoTask):
    """The base of every task. Short tasks are acknowledged once done (CELERY_TASK_ACKS_LATE),
    so a killed worker's tasks are handed out again; they are idempotent."""

    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = True
    retry_backoff_max = RETRY_BACKOFF_MAX_SECONDS
    retry_jitter = True
    max_retries = RETRY_MAX_ATTEMPTS

    def delay_on_commit(self, *args, **kwargs) -> None:
        """Enqueue through the transactional outbox: stored with the current transaction,
        published after it commits, or by the relay when the broker was away."""
        from flywheel.services.outbox import outbox_enqueue

        outbox_enqueue(task_name=self.name, args=args, kwargs=kwargs)


app = Celery("flywheel", task_cls=FlywheelTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
@worker_process_init.connect
def _limit_torch_threads(**kwargs) -> None:
    """Workers train and embed outside the model loader too; cap their torch threads."""
    from flywheel.ml.loading import torch_threads_limit

    torch_threads_limit()


_outbox_relay_stop = threading.Event()


@worker_ready.connect
def _start_outbox_relay(**kwargs) -> None:
    """Every worker relays the outbox, so that what was stored while Redis was down is sent
    within seconds of its return, without waiting for beat."""
    from django.conf import settings

    from flywheel.services.outbox import outbox_relay_forever

    threading.Thread(
        target=outbox_relay_forever,
        kwargs={
            "stop": _outbox_relay_stop,
            "interval_seconds": settings.FLYWHEEL_OUTBOX_RELAY_INTERVAL_SECONDS,
        },
        name="outbox-relay",
        daemon=True,
    ).start()


@worker_shutting_down.connect
def _stop_outbox_relay(**kwargs) -> None:
    _outbox_relay_stop.set()


@task_prerun.connect
def _log_context_bind(*, task_id, task, args, kwargs, **extra) -> None:
    """Log lines written inside a task carry its id, and a job's its Job row's id."""
    task_log_context_bind(task_id=task_id, task=task, args=args, kwargs=kwargs)


@task_postrun.connect
def _log_context_clear(**kwargs) -> None:
    task_log_context_clear()
