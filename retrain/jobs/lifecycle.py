"""Long tasks as Job rows: created here, run by `job_run` on a worker, watched by the reaper.

`job_run` marks the job running and keeps a heartbeat from a background thread, so a job
whose worker dies (killed, out of memory, machine gone) is noticed by `jobs_reap_stale`,
which puts it back in the queue (training resumes from its checkpoint) or, after too many
attempts, fails it. Cancelling asks the worker to stop at its next step; the handler then
cleans up after itself.
"""

import logging
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from flywheel.models import Project
from retrain.models import Job

logger = logging.getLogger(__name__)

State = Job.State
LOG_TAIL_LINES = 200
HEARTBEAT_INTERVAL_SECONDS = 10


class JobCancelled(Exception):
    """Raised inside a handler when an admin asked the job to stop."""


class InvalidJobParameters(ValueError):
    pass


@dataclass
class JobContext:
    """What a running handler uses to report progress and to notice a cancel request."""

    job_id: int

    def progress(self, percent: float, message: str = "") -> None:
        """Report progress; raises JobCancelled if the job was asked to stop."""
        fields = {"progress": max(0, min(100, int(percent))), "heartbeat_at": timezone.now()}
        if message:
            fields["progress_message"] = message[:300]
        Job.objects.filter(pk=self.job_id).update(**fields)
        self.stop_if_cancelled()

    def should_stop(self) -> bool:
        return Job.objects.filter(pk=self.job_id, cancel_requested=True).exists()

    def stop_if_cancelled(self) -> None:
        if self.should_stop():
            raise JobCancelled()

    def log(self, line: str) -> None:
        stamped = f"{timezone.now():%H:%M:%S} {line}"
        with transaction.atomic():
            job = Job.objects.select_for_update().only("log_tail").get(pk=self.job_id)
            lines = [*job.log_tail.splitlines(), stamped][-LOG_TAIL_LINES:]
            Job.objects.filter(pk=self.job_id).update(log_tail="\n".join(lines))

    def record_metrics(self, **metrics) -> None:
        with transaction.atomic():
            job = Job.objects.select_for_update().only("metrics").get(pk=self.job_id)
            Job.objects.filter(pk=self.job_id).update(metrics={**job.metrics, **metrics})


class JobTask(Protocol):
    """What the registry uses of a job kind's Celery task (a `shared_task` on celery's
    DjangoTask): enqueue it with the job's id, now or once the transaction commits."""

    def delay(self, job_id: int, /) -> object: ...

    def delay_on_commit(self, job_id: int, /) -> object: ...


# kind -> the function that validates and normalises its parameters
_PARAMETER_VALIDATORS: dict[str, Callable[[dict], dict]] = {}
# kind -> the Celery task that runs it
_TASKS: dict[str, JobTask] = {}


def register_job_kind(kind: str, *, task: JobTask, validate: Callable[[dict], dict]) -> None:
    _TASKS[kind] = task
    _PARAMETER_VALIDATORS[kind] = validate


def job_create(
    *,
    project: Project,
    kind: str,
    trigger: str,
    parameters: dict | None = None,
    triggered_by=None,
    parent: Job | None = None,
) -> Job:
    """Create a queued job and enqueue it once the transaction commits."""
    if kind not in _TASKS:
        raise InvalidJobParameters(f"unknown job kind {kind!r}")
    normalised = _PARAMETER_VALIDATORS[kind](dict(parameters or {}))
    job = Job.objects.create(
        project=project,
        kind=kind,
        trigger=trigger,
        parameters=normalised,
        triggered_by=triggered_by,
        parent=parent,
    )
    _TASKS[kind].delay_on_commit(job.pk)
    return job


def job_enqueue(*, job: Job) -> None:
    _TASKS[job.kind].delay(job.pk)


def job_cancel(*, job: Job) -> Job:
    """A queued job is cancelled at once; a running one stops at its next step."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.state == State.QUEUED:
            job.state, job.finished_at = State.CANCELLED, timezone.now()
            job.progress_message = "Cancelled before it started."
        elif job.state == State.RUNNING:
            job.cancel_requested = True
        job.save()
    return job


class _Heartbeat(threading.Thread):
    """Beats while the handler runs, even through one long step (loading a model)."""

    def __init__(self, job_id: int):
        super().__init__(name=f"job-{job_id}-heartbeat", daemon=True)
        self.job_id = job_id
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(HEARTBEAT_INTERVAL_SECONDS):
                Job.objects.filter(pk=self.job_id, state=State.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        finally:
            connection.close()


def _claim(job_id: int) -> Job | None:
    """Mark the job running if it is queued; None if it is not (finished, or running on
    another worker: a duplicate delivery)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.state != State.QUEUED:
            return None
        if job.cancel_requested:
            job.state, job.finished_at = State.CANCELLED, timezone.now()
            job.save()
            return None
        now = timezone.now()
        job.state = State.RUNNING
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.attempts = F("attempts") + 1
        job.worker = socket.gethostname()
        job.save()
        job.refresh_from_db()
        return job


def job_run(*, job_id: int, handler: Callable[[Job, JobContext], None]) -> str | None:
    """Run a queued job with `handler(job, context)`; the job's final state, or None when
    this delivery had nothing to do."""
    job = _claim(job_id)
    if job is None:
        return None
    context = JobContext(job_id=job.pk)
    heartbeat = _Heartbeat(job.pk)
    heartbeat.start()
    final_state, error = State.SUCCEEDED, ""
    try:
        handler(job, context)
    except JobCancelled:
        final_state = State.CANCELLED
    except Exception as failure:
        logger.exception("Job %s failed", job.pk)
        final_state = State.FAILED
        error = "".join(traceback.format_exception(failure))[-4000:]
    finally:
        heartbeat.stopped.set()
        heartbeat.join()
    updates = {"state": final_state, "finished_at": timezone.now(), "error": error}
    if final_state == State.SUCCEEDED:
        updates["progress"] = 100
    if final_state == State.CANCELLED:
        updates["progress_message"] = "Cancelled."
    Job.objects.filter(pk=job.pk).update(**updates)
    return final_state


def jobs_reap_stale() -> dict[str, list[int]]:
    """Running jobs whose heartbeat stopped: retry them (up to FLYWHEEL_JOB_MAX_ATTEMPTS) or
    fail them. Queued jobs nobody took for too long: enqueue them again (a lost task)."""
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.FLYWHEEL_JOB_HEARTBEAT_TIMEOUT_SECONDS)
    retried, failed, requeued = [], [], []
    with transaction.atomic():
        for job in Job.objects.select_for_update(skip_locked=True).filter(
            state=State.RUNNING, heartbeat_at__lt=stale_before
        ):
            if job.cancel_requested:
                job.state, job.finished_at = State.CANCELLED, now
                job.progress_message = "Cancelled (its worker had stopped)."
                failed.append(job.pk)
            elif job.attempts < settings.FLYWHEEL_JOB_MAX_ATTEMPTS:
                job.state = State.QUEUED
                job.progress_message = "Its worker stopped responding; queued again."
                retried.append(job.pk)
            else:
                job.state, job.finished_at = State.FAILED, now
                job.error = f"The worker stopped responding ({job.attempts} attempts); giving up."
                failed.append(job.pk)
            job.save()
        lost_before = now - timedelta(seconds=settings.FLYWHEEL_JOB_QUEUED_TIMEOUT_SECONDS)
        requeued = list(
            Job.objects.filter(state=State.QUEUED, created_at__lt=lost_before)
            .exclude(pk__in=retried)
            .values_list("pk", flat=True)
        )
    for job_id in retried + requeued:
        job_enqueue(job=Job.objects.get(pk=job_id))
    return {"retried": retried, "failed": failed, "requeued": requeued}
