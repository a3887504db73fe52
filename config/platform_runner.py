"""`make run`: the whole platform in the foreground on the embedded defaults.

Starts (or reuses) the embedded PostgreSQL and Redis, migrates, bootstraps the demo, then runs
the web server, a general Celery worker, a training worker (concurrency 1) and beat as child
processes. A child that dies is started again after a backoff that doubles with each quick
death, while the others keep serving. Ctrl-C (or SIGTERM) stops the children in order and then
the private services.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.db import connection

from config.queues import GENERAL_WORKER_QUEUES, Queue
from config.settings.database import database_url_from_config
from config.workers import celery_command, worker_command

STARTUP_DEADLINE_SECONDS = 60
SHUTDOWN_GRACE_SECONDS = 20
RESTART_BACKOFF_INITIAL_SECONDS = 1.0
RESTART_BACKOFF_MAX_SECONDS = 60.0
# A child that ran this long before it died was healthy: its backoff starts over.
STABLE_RUN_SECONDS = 60.0
SUPERVISION_INTERVAL_SECONDS = 0.5
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class PlatformStartError(RuntimeError):
    pass


@dataclass
class ChildProcess:
    """A supervised child in a session of its own: Ctrl-C reaches only the runner, which stops
    the children in order, and the child's whole process group can be swept when it dies."""

    name: str
    command: list[str]
    environment: dict[str, str]
    process: subprocess.Popen
    started_at: float
    restarts: int = 0
    backoff_seconds: float = RESTART_BACKOFF_INITIAL_SECONDS
    restart_due_at: float | None = None

    @classmethod
    def start(cls, *, name: str, command: list[str], environment: dict[str, str]):
        process = subprocess.Popen(command, env=environment, start_new_session=True)
        return cls(
            name=name,
            command=command,
            environment=environment,
            process=process,
            started_at=time.monotonic(),
        )

    def restart(self) -> None:
        self.process = subprocess.Popen(self.command, env=self.environment, start_new_session=True)
        self.started_at = time.monotonic()
        self.restarts += 1
        self.restart_due_at = None

    def sweep_process_group(self) -> None:
        """Kill what is left of a dead child's group (a Celery master's pool processes), so no
        orphan keeps working beside its replacement."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def children_supervise(children: list["ChildProcess"], *, log) -> None:
    """One round of supervision: schedule the restart of a child that died, with a backoff
    that doubles on each quick death, and restart those whose time has come."""
    now = time.monotonic()
    for child in children:
        if child.restart_due_at is None:
            status = child.process.poll()
            if status is None:
                continue
            child.sweep_process_group()
            ran_seconds = now - child.started_at
            if ran_seconds >= STABLE_RUN_SECONDS:
                child.backoff_seconds = RESTART_BACKOFF_INITIAL_SECONDS
            child.restart_due_at = now + child.backoff_seconds
            log(
                f"{child.name} (pid {child.process.pid}) exited with status {status} after "
                f"{ran_seconds:.0f}s; restarting it in {child.backoff_seconds:.0f}s"
            )
            child.backoff_seconds = min(child.backoff_seconds * 2, RESTART_BACKOFF_MAX_SECONDS)
        elif now >= child.restart_due_at:
            child.restart()
            log(f"{child.name} restarted (pid {child.process.pid}, restart {child.restarts})")


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


# How long the start-up summary waits for the workers to answer before it is printed anyway.
WORKERS_READY_DEADLINE_SECONDS = 120


def _wait_until(condition, *, what: str, deadline_seconds: float = STARTUP_DEADLINE_SECONDS):
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise PlatformStartError(f"{what} did not come up within {deadline_seconds:.0f}s")
        time.sleep(0.2)


def private_redis_start(url: str) -> subprocess.Popen | None:
    """Start a redis-server for `url` when nothing answers there and it is a local address."""
    if _redis_answers(url):
        return None
    parts = urlsplit(url)
    if parts.hostname not in LOCAL_HOSTS:
        raise PlatformStartError(f"Redis at {url} does not answer, and it is not a local address")
    executable = shutil.which("redis-server")
    if executable is None:
        raise PlatformStartError(
            f"Nothing answers at {url} and redis-server is not installed "
            "(apt-get install redis-server, or set REDIS_URL)"
        )
    process = subprocess.Popen(
        [
            executable,
            "--port",
            str(parts.port or 6379),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait_until(lambda: _redis_answers(url), what="the private redis-server")
    return process


def _web_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered; /healthz says 503 until the workers are up
    except OSError:
        return False


def _platform_healthy(url: str) -> bool:
    """/healthz answers 200 only once the workers answer a ping: their banners are printed."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def welcome_block(lines: list[str]) -> str:
    """The start-up summary, framed so that it stands out from the children's output."""
    rule = "─" * 72
    return "\n".join(["", rule, *lines, rule, ""])


def child_commands(*, host: str, port: int) -> dict[str, list[str]]:
    python = sys.executable
    return {
        "web": [
            python,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            # Named explicitly: gunicorn looks for its config only in the working directory.
            "--config",
            str(Path(settings.BASE_DIR) / "gunicorn.conf.py"),
            "--bind",
            f"{host}:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            "2",
            "--threads",
            "4",
            "--timeout",
            "120",
            "--access-logfile",
            "-",
        ],
        "worker": worker_command(
            hostname="general@%h",
            queues=GENERAL_WORKER_QUEUES,
            pool="prefork",
            concurrency=2,
            quiet_cluster=False,
        ),
        "training-worker": worker_command(
            hostname="training@%h",
            queues=[Queue.TRAINING],
            pool="prefork",
            concurrency=1,
            prefetch_multiplier=1,
            quiet_cluster=False,
        ),
        "beat": celery_command(
            "beat",
            "--loglevel",
            "INFO",
            "--scheduler",
            "django_celery_beat.schedulers:DatabaseScheduler",
        ),
    }


def _children_started(children: list[ChildProcess]) -> bool:
    """Raises when a child has exited: before the platform is up, that is a configuration
    error (a taken port, a missing dependency) that restarting cannot fix."""
    for child in children:
        if child.process.poll() is not None:
            raise PlatformStartError(
                f"{child.name} exited with status {child.process.returncode} while starting"
            )
    return True


def children_stop(children: list[ChildProcess]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    for child in reversed(children):
        try:
            child.process.wait(timeout=SHUTDOWN_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            print(f"{child.name} did not stop in {SHUTDOWN_GRACE_SECONDS}s; killing it", flush=True)
        child.sweep_process_group()
        child.process.wait()


def platform_run(*, host: str, port: int, log=print, welcome: list[str] | None = None) -> int:
    """Run until interrupted; return the exit status. `welcome` is printed as one block once
    the web answers and the workers are up (or WORKERS_READY_DEADLINE_SECONDS have passed), so
    that it comes after the workers' banners rather than among them."""
    interrupted = False

    def _on_signal(signum, frame):
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    redis_process = private_redis_start(settings.REDIS_URL)
    if redis_process:
        log(f"Started a private redis-server for {settings.REDIS_URL}")

    # Children get the database's address directly: the embedded server belongs to this
    # process and stops when it exits, after the children.
    environment = {
        **os.environ,
        "DATABASE_URL": database_url_from_config(connection.settings_dict),
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
    }
    children: list[ChildProcess] = []
    try:
        for name, command in child_commands(host=host, port=port).items():
            # Web and the general worker keep the default of one torch thread each (see
            # FLYWHEEL_TORCH_THREADS); the training worker trains on every core.
            threads = {"FLYWHEEL_TORCH_THREADS": "0"} if name == "training-worker" else {}
            children.append(
                ChildProcess.start(name=name, command=command, environment=environment | threads)
            )
        url = f"http://{host}:{port}/"
        _wait_until(
            lambda: interrupted or (_children_started(children) and _web_answers(url + "healthz")),
            what="the web server",
        )
        workers_ready_by = time.monotonic() + WORKERS_READY_DEADLINE_SECONDS
        while not (interrupted or _platform_healthy(url + "healthz")):
            if time.monotonic() > workers_ready_by:
                log(f"The workers are not answering yet: see {url}healthz")
                break
            time.sleep(0.5)
        if not interrupted:
            lines = welcome or [f"  Flywheel is running at {url}"]
            log(welcome_block([*lines, "", "  Press Ctrl-C to stop."]))
        while not interrupted:
            children_supervise(children, log=log)
            time.sleep(SUPERVISION_INTERVAL_SECONDS)
    finally:
        log("Stopping…")
        children_stop(children)
        if redis_process:
            redis_process.terminate()
            redis_process.wait()
    log("Stopped.")
    return 0
