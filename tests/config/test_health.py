"""/healthz with every part up (a real worker answering)."""

import pytest


@pytest.mark.django_db
def test_healthz_is_green_when_database_redis_and_a_worker_answer(client, celery_worker):
    response = client.get("/healthz")

    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ok"
    assert report["failing"] == []
    assert report["components"]["pgvector"]["detail"]["version"].startswith("0.")
    assert celery_worker.hostname in report["components"]["celery"]["detail"]["workers"]
