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
from retrain.transitions import JobAlreadyUnfinished

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
# kind -> a check of its normalised parameters against the project's data, for the kinds
# whose parameters can be wrong for one project and right for another
_PROJECT_CHECKS: dict[str, Callable[[Project, dict], None]] = {}
# kind -> the Celery task that runs it
_TASKS: dict[str, JobTask] = {}
# Kinds of which a project runs one at a time: a second one would redo the same work.
_ONE_AT_A_TIME: set[str] = set()
UNFINISHED = (State.QUEUED, State.RUNNING)


def register_job_kind(
    kind: str,
    *,
    task: JobTask,
    validate: Callable[[dict], dict],
    check_for_project: Callable[[Project, dict], None] | None = None,
    one_at_a_time: bool = False,
) -> None:
    _TASKS[kind] = task
    _PARAMETER_VALIDATORS[kind] = validate
    if one_at_a_time:
        _ONE_AT_A_TIME.add(kind)
    if check_for_project is not None:
        _PROJECT_CHECKS[kind] = check_for_project


def job_create(
    *,
    project: Project,
    kind: str,
    trigger: str,
    parameters: dict | None = None,
    triggered_by=None,
    parent: Job | None = None,
) -> Job:
    """Create a queued job and enqueue it once the transaction commits. Raises
    InvalidJobParameters, and JobAlreadyUnfinished for a kind a project runs one at a time."""
    if kind not in _TASKS:
        raise InvalidJobParameters(f"unknown job kind {kind!r}")
    # Imported here: the parameter checks import this module's InvalidJobParameters.
    from retrain.jobs.parameters import check_parameters

    normalised = _PARAMETER_VALIDATORS[kind](check_parameters(dict(parameters or {})))
    if kind in _PROJECT_CHECKS:
        _PROJECT_CHECKS[kind](project, normalised)
    with transaction.atomic():
        if kind in _ONE_AT_A_TIME:
            _refuse_a_second(project=project, kind=kind)
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


def _refuse_a_second(*, project: Project, kind: str) -> None:
    """Raise JobAlreadyUnfinished when a job of `kind` is queued or running in `project`.
    Holds the project's row until the caller's transaction ends, so that two requests at
    once take turns and the second sees the first's job."""
    Project.objects.select_for_update().get(pk=project.pk)
    unfinished = (
        Job.objects.filter(project=project, kind=kind, state__in=UNFINISHED)
        .order_by("created_at")
        .first()
    )
    if unfinished is not None:
        raise JobAlreadyUnfinished(
            f"A {unfinished.get_kind_display().lower()} of this project is already "
            f"{unfinished.state} (job {unfinished.pk}); it covers this request too."
        )


def job_enqueue(*, job: Job) -> None:
    _TASKS[job.kind].delay(job.pk)


def job_cancel(*, job: Job, by: str = "") -> Job:
    """A queued job is cancelled at once; a running one stops at its next step (or between
    two batches of a long step). `by` says who asked ("alice from the dashboard"); the
    cancelled job's message keeps it, for whoever wonders why it stopped."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.state == State.QUEUED:
            job.state, job.finished_at = State.CANCELLED, timezone.now()
            job.progress_message = _cancelled_message(by, "before it started")
        elif job.state == State.RUNNING:
            job.cancel_requested = True
            job.metrics = {**job.metrics, "cancelled_by": by}
        job.save()
    return job


def _cancelled_message(by: str, when: str) -> str:
    return f"Cancelled {when}" + (f", by {by}." if by else ".")


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
        stopped = Job.objects.only("progress", "metrics").get(pk=job.pk)
        updates["progress_message"] = _cancelled_message(
            stopped.metrics.get("cancelled_by", ""), f"at {stopped.progress}%"
        )
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
