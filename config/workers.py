"""Celery worker processes, started, awaited and stopped from Python.

One helper for everything that runs real workers: `make run` (config.platform_runner), the
test suite's fixture and the closed-loop benchmark (bench/loop).
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from config.queues import Queue

WORKER_STOP_DEADLINE_SECONDS = 30
PING_TIMEOUT_SECONDS = 1.0


class WorkerExited(RuntimeError):
    """A worker process ended while it was expected to run."""


def celery_command(*arguments: str) -> list[str]:
    """`celery -A config …` with this interpreter."""
    return [sys.executable, "-m", "celery", "-A", "config", *arguments]


def worker_command(
    *,
    hostname: str,
    queues: Iterable[Queue | str],
    pool: str = "solo",
    concurrency: int | None = None,
    prefetch_multiplier: int | None = None,
    quiet_cluster: bool = True,
) -> list[str]:
    """The command line of a worker consuming `queues`. The solo pool runs one task at a time
    in the worker process itself: what two cores can afford outside production."""
    arguments = ["worker", "--loglevel", "INFO", "--hostname", hostname, "--pool", pool]
    arguments += ["--queues", ",".join(str(Queue(queue).value) for queue in queues)]
    if concurrency is not None:
        arguments += ["--concurrency", str(concurrency)]
    if prefetch_multiplier is not None:
        arguments += ["--prefetch-multiplier", str(prefetch_multiplier)]
    if quiet_cluster:
        # No other workers to synchronise with: mingle and gossip only slow the start.
        arguments += ["--without-mingle", "--without-gossip"]
    return celery_command(*arguments)


def unique_hostname(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@localhost"


@dataclass
class WorkerProcess:
    """A `celery worker` child in a session of its own, so that a signal meant for the parent
    (Ctrl-C) does not reach it and it can be stopped in order."""

    name: str
    hostname: str
    process: subprocess.Popen
    log_path: Path | None = None

    @classmethod
    def start(
        cls,
        *,
        name: str,
        command: list[str],
        hostname: str,
        environment: dict[str, str],
        cwd: Path | None = None,
        log_path: Path | None = None,
    ) -> "WorkerProcess":
        output = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            output = log_path.open("wb")
        try:
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=True,
            )
        finally:
            if output is not None:
                output.close()  # the child holds its own descriptor
        return cls(name=name, hostname=hostname, process=process, log_path=log_path)

    def exited(self) -> bool:
        return self.process.poll() is not None

    def log_tail(self, characters: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-characters:]

    def stop(self, *, deadline_seconds: float = WORKER_STOP_DEADLINE_SECONDS) -> None:
        """SIGTERM (a warm shutdown: the running task finishes), SIGKILL past the deadline."""
        if self.exited():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=deadline_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def workers_answer_ping(workers: list[WorkerProcess]) -> bool:
    """Whether every worker answers a broadcast ping; WorkerExited when one has ended."""
    from config.celery import app as celery_app

    for worker in workers:
        if worker.exited():
            raise WorkerExited(
                f"the {worker.name} worker exited with status {worker.process.returncode}"
                + (f":\n{worker.log_tail()}" if worker.log_path else "")
            )
    replies = celery_app.control.ping(
        destination=[worker.hostname for worker in workers], timeout=PING_TIMEOUT_SECONDS
    )
    return len(replies) == len(workers)


def poll_until(
    condition: Callable[[], object],
    *,
    what: str,
    deadline_seconds: float,
    interval_seconds: float = 0.2,
):
    """Call `condition` until it returns something truthy and return that; TimeoutError at the
    deadline. The interval is the polling period, not a wait standing in for an event."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {deadline_seconds}s")
        time.sleep(interval_seconds)


def workers_wait_ready(workers: list[WorkerProcess], *, deadline_seconds: float) -> None:
    """Return once every worker answers a ping; stop them all and raise if one exits or the
    deadline passes."""
    try:
        poll_until(
            lambda: workers_answer_ping(workers),
            what="the Celery workers answering a ping",
            deadline_seconds=deadline_seconds,
            interval_seconds=0.5,
        )
    except BaseException:
        workers_stop(workers)
        raise


def workers_stop(workers: list[WorkerProcess]) -> None:
    for worker in reversed(workers):
        worker.stop()
