"""/healthz names the part that is down. No worker runs in this module (the worker fixture is
module-scoped), so Celery is genuinely absent."""

import pytest

from config.health import celery_health


@pytest.fixture(autouse=True)
def fresh_celery_check():
    """The latest Celery ping is kept per process: an earlier module's must not answer here."""
    celery_health.forget()


@pytest.mark.django_db
def test_healthz_answers_503_naming_celery_when_no_worker_runs(client):
    response = client.get("/healthz")

    assert response.status_code == 503
    report = response.json()
    assert report["failing"] == ["celery"]
    assert report["components"]["celery"]["detail"]["error"] == "no Celery worker answered"
    assert report["components"]["database"]["ok"] is True


@pytest.mark.django_db
def test_healthz_names_redis_and_celery_when_redis_is_unreachable(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["failing"] == ["redis", "celery"]


def test_healthz_refuses_writes(client):
    assert client.post("/healthz").status_code == 405
