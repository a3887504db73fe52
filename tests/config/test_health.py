"""/healthz with every part up (a real worker answering)."""

import threading
import time

import pytest

from config.health import (
    CELERY_PING_TIMEOUT_SECONDS,
    ComponentHealth,
    LatestCheck,
    celery_health,
)
from tests.conftest import wait_for, worker_start


@pytest.fixture(autouse=True)
def fresh_celery_check():
    """The latest Celery ping is kept per process: an earlier module's must not answer here."""
    celery_health.forget()


def _workers(client) -> list[str]:
    return client.get("/healthz").json()["components"]["celery"]["detail"].get("workers", [])


@pytest.mark.django_db
def test_healthz_is_green_when_database_redis_and_a_worker_answer(client, celery_worker):
    response = client.get("/healthz")

    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ok"
    assert report["failing"] == []
    assert report["components"]["pgvector"]["detail"]["version"].startswith("0.")
    assert celery_worker.hostname in report["components"]["celery"]["detail"]["workers"]


@pytest.mark.django_db
def test_healthz_answers_from_the_latest_ping_without_waiting_for_another(client, celery_worker):
    client.get("/healthz")  # a process's first probe waits for one ping

    started = time.monotonic()
    response = client.get("/healthz")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert celery_worker.hostname in response.json()["components"]["celery"]["detail"]["workers"]
    # A broadcast ping always waits its whole timeout, so an answer in less shows that none
    # was waited for (the latency itself is measured in bench/README.md).
    assert elapsed < CELERY_PING_TIMEOUT_SECONDS


@pytest.mark.django_db
def test_a_worker_that_stops_drops_out_of_healthz_by_itself(
    client, celery_worker, django_db_setup, tmp_path
):
    from django.db import connection

    from config.settings.database import database_url_from_config

    extra = worker_start(
        database_url=database_url_from_config(connection.settings_dict),
        log_path=tmp_path / "extra-worker.log",
        queues=["default"],
        name="extra",
    )
    try:
        wait_for(
            lambda: extra.hostname in _workers(client),
            what="/healthz listing the extra worker",
            deadline_seconds=30,
        )
    finally:
        extra.stop()

    wait_for(
        lambda: extra.hostname not in _workers(client),
        what="/healthz dropping the stopped worker",
        deadline_seconds=30,
    )
    report = client.get("/healthz").json()
    assert report["status"] == "ok"  # the module's worker still answers
    assert celery_worker.hostname in report["components"]["celery"]["detail"]["workers"]


def test_a_stale_result_is_answered_at_once_and_refreshed_in_the_background():
    calls = []

    def check() -> ComponentHealth:  # up at first, down from then on
        calls.append(threading.current_thread().name)
        return ComponentHealth(ok=len(calls) == 1)

    latest = LatestCheck(check, max_age_seconds=0)

    assert latest.get().ok is True  # the first call waits for the check, in this thread
    assert latest.get().ok is True  # stale: answered from the latest result all the same
    wait_for(lambda: len(calls) >= 2, what="the background refresh", deadline_seconds=10)
    wait_for(lambda: latest.get().ok is False, what="the refreshed result", deadline_seconds=10)
    assert calls[0] == threading.current_thread().name
    assert calls[1] != threading.current_thread().name
