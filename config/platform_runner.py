"""`make run`: the whole platform in the foreground on the embedded defaults.

Starts (or reuses) the embedded PostgreSQL and Redis, migrates, bootstraps the demo, then runs
the web server, a general Celery worker, a training worker (concurrency 1) and beat as child
processes. Ctrl-C (or SIGTERM) stops the children in order and then the private services.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.db import connection

from config.queues import GENERAL_WORKER_QUEUES, Queue
from config.settings.database import database_url_from_config
from config.workers import celery_command, worker_command

STARTUP_DEADLINE_SECONDS = 60
SHUTDOWN_GRACE_SECONDS = 20
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class PlatformStartError(RuntimeError):
    pass


@dataclass
class ChildProcess:
    name: str
    process: subprocess.Popen


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


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


def child_commands(*, host: str, port: int) -> dict[str, list[str]]:
    python = sys.executable
    return {
        "web": [
            python,
            "-m",
            "gunicorn",
            "config.wsgi:application",
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


def children_stop(children: list[ChildProcess]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    for child in reversed(children):
        try:
            child.process.wait(timeout=SHUTDOWN_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            print(f"{child.name} did not stop in {SHUTDOWN_GRACE_SECONDS}s; killing it", flush=True)
            child.process.kill()
            child.process.wait()


def platform_run(*, host: str, port: int, log=print) -> int:
    """Run until interrupted; return the exit status."""
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
    exit_status = 0
    try:
        for name, command in child_commands(host=host, port=port).items():
            # Web and the general worker share the cores with training: one torch thread
            # each keeps them from starving it (and one another).
            threads = {} if name == "training-worker" else {"FLYWHEEL_TORCH_THREADS": "1"}
            # A session of its own: Ctrl-C reaches only this process, which stops the
            # children in order instead of all of them at once.
            process = subprocess.Popen(command, env=environment | threads, start_new_session=True)
            children.append(ChildProcess(name=name, process=process))
        url = f"http://{host}:{port}/"
        _wait_until(lambda: interrupted or _web_answers(url + "healthz"), what="the web server")
        if not interrupted:
            log(f"\nFlywheel is running at {url}  (admin: {url}admin/, health: {url}healthz)")
            log("Press Ctrl-C to stop.\n")
        while not interrupted:
            exited = next((c for c in children if c.process.poll() is not None), None)
            if exited:
                log(f"{exited.name} exited with status {exited.process.returncode}; stopping")
                exit_status = 1
                break
            time.sleep(0.5)
    finally:
        log("Stopping…")
        children_stop(children)
        if redis_process:
            redis_process.terminate()
            redis_process.wait()
    log("Stopped.")
    return exit_status
