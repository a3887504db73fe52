"""Tasks travel through the real Redis to a real worker and land on the right queue; they
retry transient failures, and a killed worker's short tasks come back in minutes."""

import os
import signal
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection
from django.utils import timezone

from config.celery import TRANSIENT_ERRORS
from config.celery import app as celery_app
from config.queues import Queue
from config.settings.database import database_url_from_config
from config.workers import WorkerProcess, unique_hostname, worker_command
from feedback.models import Rating
from feedback.services.ratings import rating_submit
from flywheel.tasks.housekeeping import clear_expired_sessions
from retrain.curation.pipeline import CURATION_LOCK_NAMESPACE
from retrain.models import InstructionExample
from retrain.tasks.curation import interaction_curate
from tests.conftest import (
    REPOSITORY_ROOT,
    WORKER_START_DEADLINE_SECONDS,
    wait_for,
    worker_environment,
    worker_start,
)
from tests.factories import served

TASK_RESULT_DEADLINE_SECONDS = 60
SHORT_VISIBILITY_TIMEOUT_SECONDS = 5


def _session(*, expires_in: timedelta) -> str:
    store = SessionStore()
    store["seen"] = True
    store.create()
    Session.objects.filter(session_key=store.session_key).update(
        expire_date=timezone.now() + expires_in
    )
    return store.session_key


# The tests with workers of their own come first: the module's `celery_worker` consumes every
# queue from its first test to the end of the module, and would take their tasks.


@contextmanager
def curation_lock_held(project):
    """Hold the project's curation lock from this connection: a worker's curation waits on
    it, or fails at once under a lock_timeout."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [CURATION_LOCK_NAMESPACE, project.pk])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_unlock(%s, %s)", [CURATION_LOCK_NAMESPACE, project.pk]
            )


def _curated(interactions) -> bool:
    return InstructionExample.objects.filter(interaction__in=interactions).count() == len(
        interactions
    )


@pytest.mark.django_db(transaction=True)
def test_a_task_failing_on_the_database_is_retried_with_backoff_until_it_succeeds(
    project, tmp_path
):
    interaction = served(project, "How do I get a refund?")
    Rating.objects.create(interaction=interaction, rater_id="u", source="api", thumb="up")
    # The worker's statements give up on a lock after 0.3 s: PostgreSQL's LockNotAvailable,
    # an OperationalError, as a database failover or a restart would raise.
    database_url = database_url_from_config(
        connection.settings_dict
        | {"OPTIONS": connection.settings_dict["OPTIONS"] | {"options": "-c lock_timeout=300"}}
    )
    worker = worker_start(
        database_url=database_url, log_path=tmp_path / "worker.log", queues=["curation"]
    )
    try:
        with curation_lock_held(project):
            result = interaction_curate.delay(str(interaction.pk))
            wait_for(
                lambda: result.state == "RETRY",
                what="the task failing on the lock and being retried",
                deadline_seconds=TASK_RESULT_DEADLINE_SECONDS,
            )
        assert result.get(timeout=TASK_RESULT_DEADLINE_SECONDS)["curated"] == 1
    finally:
        worker.stop()
    assert "retry: Retry in" in worker.log_tail(100_000)
    assert InstructionExample.objects.filter(interaction=interaction).exists()


@pytest.mark.django_db(transaction=True)
def test_curation_tasks_a_killed_worker_held_are_curated_by_another_within_minutes(
    project, tmp_path, test_redis
):
    interactions = [served(project, f"Question {n}?") for n in range(3)]
    database_url = database_url_from_config(connection.settings_dict)
    # Prefork: the pool's process runs one task while the worker holds the others prefetched.
    hostname = unique_hostname("doomed")
    doomed = WorkerProcess.start(
        name="doomed",
        command=worker_command(
            hostname=hostname,
            queues=[Queue.CURATION],
            pool="prefork",
            concurrency=1,
            prefetch_multiplier=len(interactions),
        ),
        hostname=hostname,
        environment=worker_environment(database_url),
        cwd=REPOSITORY_ROOT,
        log_path=tmp_path / "doomed.log",
    )
    with curation_lock_held(project):
        for interaction in interactions:
            rating_submit(interaction=interaction, rater_id="u", source="api", thumb="up")
        wait_for(
            lambda: test_redis.hlen("unacked") == len(interactions),
            what="the worker holding every curation task unacknowledged",
            deadline_seconds=WORKER_START_DEADLINE_SECONDS,
        )
        os.killpg(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait()
    assert not InstructionExample.objects.filter(interaction__in=interactions).exists()

    # The default timeout is 15 minutes; the test shortens it to see the same thing happen.
    environment = worker_environment(database_url) | {
        "FLYWHEEL_BROKER_VISIBILITY_TIMEOUT": str(SHORT_VISIBILITY_TIMEOUT_SECONDS)
    }
    hostname = unique_hostname("heir")
    heir = WorkerProcess.start(
        name="heir",
        command=worker_command(hostname=hostname, queues=[Queue.CURATION]),
        hostname=hostname,
        environment=environment,
        cwd=REPOSITORY_ROOT,
        log_path=tmp_path / "heir.log",
    )
    try:
        wait_for(
            lambda: _curated(interactions),
            what="another worker curating what the killed one held",
            # The timeout, kombu's 10-second sweep for expired messages, and the curation.
            deadline_seconds=SHORT_VISIBILITY_TIMEOUT_SECONDS + 10 + 60,
        )
    finally:
        heir.stop()


def test_every_task_retries_transient_failures_with_exponential_backoff():
    ours = [
        task
        for name, task in celery_app.tasks.items()
        if name.split(".")[0] in {"flywheel", "feedback", "retrain", "dashboard"}
    ]

    assert len(ours) > 10
    for task in ours:
        assert task.autoretry_for == TRANSIENT_ERRORS, task.name
        assert task.retry_backoff and task.retry_jitter, task.name
        assert (
            task.retry_backoff_max < celery_app.conf.broker_transport_options["visibility_timeout"]
        )


def test_short_tasks_are_acknowledged_when_done_and_long_jobs_when_they_start():
    short = celery_app.tasks["retrain.tasks.curation.interaction_curate"]
    long_jobs = [
        celery_app.tasks[f"retrain.tasks.{name}"]
        for name in (
            "training.run_lora_training",
            "training.run_evaluation",
            "training.run_retriever_training",
            "indexing.run_index_refresh",
            "curation.run_dataset_snapshot",
        )
    ]

    assert short.acks_late and short.reject_on_worker_lost
    assert all(not job.acks_late for job in long_jobs)
    visibility_timeout = celery_app.conf.broker_transport_options["visibility_timeout"]
    assert celery_app.conf.task_time_limit < visibility_timeout <= 30 * 60


@pytest.mark.django_db(transaction=True)
def test_a_task_sent_through_redis_runs_on_the_worker_and_changes_postgres(celery_worker):
    expired = _session(expires_in=timedelta(days=-1))
    live = _session(expires_in=timedelta(days=1))

    result = clear_expired_sessions.delay()

    assert result.get(timeout=TASK_RESULT_DEADLINE_SECONDS) == 1
    remaining = set(Session.objects.values_list("session_key", flat=True))
    assert live in remaining
    assert expired not in remaining


@pytest.mark.parametrize(
    "task_name, queue",
    [
        ("flywheel.tasks.housekeeping.clear_expired_sessions", "default"),
        ("flywheel.tasks.indexing.document_index", "index"),
        ("retrain.tasks.curation.interaction_curate", "curation"),
        ("retrain.tasks.training.adapter_train", "training"),
    ],
)
def test_tasks_are_routed_to_the_queue_their_module_names(task_name, queue):
    route = celery_app.amqp.router.route({}, task_name)
    assert route["queue"].name == queue


def test_celery_speaks_json_only_and_limits_task_time():
    assert celery_app.conf.task_serializer == "json"
    assert celery_app.conf.accept_content == ["json"]
    assert 0 < celery_app.conf.task_soft_time_limit < celery_app.conf.task_time_limit
    assert celery_app.conf.worker_prefetch_multiplier == 1
