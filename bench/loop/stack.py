"""The private stack `flywheel_bench` runs on, so that a benchmark never touches the data or
the workers of a `make run` or a test run on the same machine: a database of its own on the
same PostgreSQL server, a Redis database of its own, and its own Celery workers.

The command process switches its own connection to the bench database, as Django's test
runner switches to a test database (close the connection, change the NAME), and its Celery
app to the bench Redis database; the workers get both as DATABASE_URL and REDIS_URL, as
`make run` hands them to its children. The process keeps its hold on the embedded
PostgreSQL, which stays up until it exits, after its workers.

Only the management command uses this module: the test suite has its own database and worker.
"""

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management import call_command
from django.db import connection

from bench.loop.client import LoopBenchError
from config.platform_runner import private_redis_start
from config.queues import GENERAL_WORKER_QUEUES, Queue
from config.settings.database import database_url_from_config
from config.workers import (
    WorkerExited,
    WorkerProcess,
    unique_hostname,
    worker_command,
    workers_wait_ready,
)

BENCH_DATABASE_NAME = "flywheel_loop_bench"
WORKER_START_DEADLINE_SECONDS = 120


def bench_database_use(*, name: str = BENCH_DATABASE_NAME) -> str:
    """Recreate database `name` on the server of the default connection, switch this process
    to it and migrate it; its URL, for the workers. The data stays after the run, for a look
    in the dashboard; the next run starts afresh."""
    if name == connection.settings_dict["NAME"]:
        raise ValueError(f"the bench database must not be the configured one ({name})")
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    settings.DATABASES["default"]["NAME"] = name
    connection.settings_dict["NAME"] = name
    call_command("migrate", verbosity=0, interactive=False)
    return database_url_from_config(connection.settings_dict)


def redis_url_with_database(url: str, database: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@dataclass
class BenchRedis:
    url: str
    server: subprocess.Popen | None  # a redis-server started for the run, if none answered

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            self.server.wait()


def bench_redis_use(*, database: int) -> BenchRedis:
    """Empty Redis database `database` (of the configured server) and point this process'
    Celery app and rate limits at it."""
    import redis

    from config.celery import app as celery_app

    url = redis_url_with_database(settings.REDIS_URL, database)
    if url == settings.REDIS_URL:
        raise ValueError(f"the bench Redis database must not be the configured one ({url})")
    server = private_redis_start(url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    settings.REDIS_URL = settings.CELERY_BROKER_URL = settings.CELERY_RESULT_BACKEND = url
    celery_app.conf.update(broker_url=url, result_backend=url)
    return BenchRedis(url=url, server=server)


def bench_workers_start(
    *, database_url: str, redis_url: str, log_dir: Path, artifacts_dir: Path, torch_threads: int
) -> list[WorkerProcess]:
    """The general worker (default, curation, index) and the training worker, logging into
    `log_dir` and keeping adapters under `artifacts_dir`; returns once both answer a ping."""
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
        # Job ids start again in every bench database: its adapters must not land where an
        # earlier run's are.
        "FLYWHEEL_ARTIFACTS_DIR": str(artifacts_dir),
        # torch sizes its thread pool to the cores; on cores shared with other processes
        # the threads wait on each other and generation gets several times slower.
        "OMP_NUM_THREADS": str(torch_threads),
        "MKL_NUM_THREADS": str(torch_threads),
    }
    workers = []
    for name, queues in (("general", GENERAL_WORKER_QUEUES), ("training", [Queue.TRAINING])):
        hostname = unique_hostname(f"loop-bench-{name}")
        workers.append(
            WorkerProcess.start(
                name=name,
                command=worker_command(hostname=hostname, queues=queues),
                hostname=hostname,
                environment=environment,
                cwd=settings.BASE_DIR,
                log_path=log_dir / f"worker-{name}.log",
            )
        )
    try:
        workers_wait_ready(workers, deadline_seconds=WORKER_START_DEADLINE_SECONDS)
    except (TimeoutError, WorkerExited) as error:
        raise LoopBenchError(f"{error}; see the worker logs in {log_dir}") from error
    return workers
