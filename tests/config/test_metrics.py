"""/metrics: scraped after real traffic and parsed with prometheus_client's own text parser;
refused scrapes; Redis away; and the request counts of a real multi-process gunicorn."""

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
import requests
from django.contrib.auth import get_user_model
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from config.celery import app as celery_app
from config.queues import Queue
from feedback.services.reviews import review_submit
from flywheel.models import IndexVersion, Interaction, ModelVersion
from flywheel.services.interactions import interactions_log_batch
from retrain.models import Job
from tests.conftest import (
    REPOSITORY_ROOT,
    bearer,
    gunicorn_on_the_test_database,
    index_folder,
)

REQUESTS = "flywheel_http_request_duration_seconds"
# An API path no endpoint has: a JSON 404 that needs no database.
MISSING_API_PATH = "/api/v1/no-such-endpoint"
MISSING_API_ROUTE = r"^(?:v1|api)(?:/.*)?$"


def samples_of(exposition: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def scrape(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return samples_of(response.content.decode())


def value(samples, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def indexed_project(project, tmp_path):
    knowledge_base = tmp_path / "knowledge-base"
    knowledge_base.mkdir()
    (knowledge_base / "bin.md").write_text(
        "# The bin\n\nA deleted note stays in the bin for 30 days, then it is erased.\n"
    )
    index_folder(project, knowledge_base)
    return project


@pytest.mark.django_db
def test_a_scrape_reports_the_traffic_and_what_it_stored(
    client, indexed_project, secret_key, test_redis, one_torch_thread
):
    project = indexed_project.slug
    before = scrape(client)
    queued_before = value(before, "flywheel_celery_queue_length", queue=Queue.CURATION.value)

    chat = client.post(
        "/v1/chat/completions",
        data=json.dumps(
            {
                "model": "flywheel",
                "messages": [{"role": "user", "content": "How long does a note stay in the bin?"}],
                "max_tokens": 2,
            }
        ),
        content_type="application/json",
        **bearer(secret_key),
    )
    assert chat.status_code == 200, chat.content
    interaction_id = chat.json()["flywheel"]["interaction_id"]
    rating = client.post(
        "/api/v1/ratings",
        data=json.dumps({"interaction_id": interaction_id, "rater_id": "u1", "thumb": "up"}),
        content_type="application/json",
        **bearer(secret_key),
    )
    assert rating.status_code == 201, rating.content
    logged = interactions_log_batch(
        project=indexed_project,
        interactions=[{"messages": [{"role": "user", "content": "q"}], "response": "a"}],
    )[0]
    review_submit(
        interaction=Interaction.objects.get(pk=logged.id),
        reviewer=get_user_model().objects.create_user(username="reviewer"),
        decision="approved",
    )
    finished_at = timezone.now()
    Job.objects.create(
        project=indexed_project,
        kind=Job.Kind.INDEX_REFRESH,
        state=Job.State.SUCCEEDED,
        trigger=Job.Trigger.API,
        started_at=finished_at - timedelta(seconds=90),
        finished_at=finished_at,
    )
    Job.objects.create(
        project=indexed_project, kind=Job.Kind.LORA_TRAINING, trigger=Job.Trigger.API
    )
    celery_app.send_task("retrain.tasks.curation.curation_sweep", queue=Queue.CURATION.value)
    try:
        after = scrape(client)
    finally:
        test_redis.lpop(Queue.CURATION.value)  # kombu pushes to the head of the list

    for route, method, status in [
        ("v1/chat/completions", "POST", "200"),
        ("api/v1/ratings", "POST", "201"),
        ("metrics", "GET", "200"),
    ]:
        labels = {"route": route, "method": method, "status": status}
        assert (
            value(after, f"{REQUESTS}_count", **labels)
            == (value(before, f"{REQUESTS}_count", **labels) or 0) + 1
        ), labels
    chat_labels = {"route": "v1/chat/completions", "method": "POST", "status": "200"}
    assert value(after, f"{REQUESTS}_sum", **chat_labels) > 0
    assert value(after, f"{REQUESTS}_bucket", **chat_labels, le="+Inf") >= 1

    assert value(after, "flywheel_interactions_total", project=project, source="chat") == 1
    assert value(after, "flywheel_interactions_total", project=project, source="log") == 1
    assert value(after, "flywheel_ratings_total", project=project, thumb="up") == 1
    assert value(after, "flywheel_reviews_total", project=project) == 1
    # Nothing curated them: the curation tasks wait in the outbox of this test's transaction.
    assert value(after, "flywheel_curation_backlog", project=project) == 2
    assert value(before, "flywheel_interactions_total", project=project, source="chat") is None

    assert value(after, "flywheel_jobs", kind="index_refresh", state="succeeded") == 1
    assert value(after, "flywheel_jobs", kind="lora_training", state="queued") == 1
    assert value(after, "flywheel_jobs", kind="evaluation", state="failed") == 0
    refresh = {"kind": "index_refresh", "state": "succeeded"}
    assert value(after, "flywheel_job_duration_seconds_count", **refresh) == 1
    assert value(after, "flywheel_job_duration_seconds_sum", **refresh) == pytest.approx(90)
    assert value(after, "flywheel_job_duration_seconds_bucket", **refresh, le="60.0") == 0
    assert value(after, "flywheel_job_duration_seconds_bucket", **refresh, le="120.0") == 1

    production = ModelVersion.objects.get(
        project=indexed_project, status=ModelVersion.Status.PRODUCTION
    )
    assert Interaction.objects.get(pk=interaction_id).model_version == production
    assert (
        value(after, "flywheel_production_model_version", project=project, version=production.name)
        == production.pk
    )
    active = IndexVersion.objects.get(project=indexed_project, status=IndexVersion.Status.ACTIVE)
    assert value(after, "flywheel_active_index_version", project=project) == active.number

    assert value(after, "flywheel_database_up") == 1
    assert value(after, "flywheel_redis_up") == 1
    assert value(after, "flywheel_celery_queue_length", queue=Queue.CURATION.value) == (
        queued_before + 1
    )
    assert value(after, "flywheel_celery_queue_length", queue=Queue.TRAINING.value) is not None


@pytest.mark.django_db
def test_a_scrape_from_an_address_outside_the_allow_list_is_refused(client, settings):
    settings.FLYWHEEL_METRICS_ALLOW = ["127.0.0.1", "10.0.0.0/8"]

    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:127.0.0.1").status_code == 200
    settings.FLYWHEEL_METRICS_ALLOW = []
    assert client.get("/metrics").status_code == 403


@pytest.mark.django_db
def test_with_a_token_a_scrape_must_present_it(client, settings):
    settings.FLYWHEEL_METRICS_TOKEN = "scrape-token-0123456789"
    outside = {"REMOTE_ADDR": "203.0.113.9"}

    refused = client.get("/metrics", **outside)
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", **outside, **bearer("another-token")).status_code == 401
    assert client.get("/metrics", **outside, **bearer("scrape-token-0123456789")).status_code == 200
    # The allow-list still admits its addresses without the token.
    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_redis_being_away_leaves_the_queues_out_and_says_so(client, settings):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        unused_port = probe.getsockname()[1]
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{unused_port}/0"

    samples = scrape(client)

    assert value(samples, "flywheel_redis_up") == 0
    assert value(samples, "flywheel_database_up") == 1
    assert not any(name == "flywheel_celery_queue_length" for name, _ in samples)


def test_in_production_a_plain_http_scrape_answers_with_the_database_and_redis_down():
    """Prometheus scrapes inside the deployment over plain HTTP: not redirected to HTTPS. With
    nothing listening on port 1 the scrape still answers, and says what is down."""
    probe = (
        "import django; django.setup(); from django.test import Client; "
        "response = Client(HTTP_HOST='flywheel.example.com').get('/metrics'); "
        "print(response.status_code); print(response.content.decode())"
    )
    answered = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPOSITORY_ROOT,
        env={key: value for key, value in os.environ.items() if key != "DEBUG"}
        | {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": "metrics-probe-" + "0123456789abcdefghijklmnopqrstuvwxyz" * 2,
            "ALLOWED_HOSTS": "flywheel.example.com",
            "DATABASE_URL": "postgresql://app@127.0.0.1:1/flywheel",
            "REDIS_URL": "redis://127.0.0.1:1/0",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answered.returncode == 0, answered.stderr
    status, _, exposition = answered.stdout.partition("\n")
    assert status == "200", answered.stdout
    samples = samples_of(exposition)
    assert value(samples, "flywheel_database_up") == 0
    assert value(samples, "flywheel_redis_up") == 0


def test_every_gunicorn_process_reports_the_requests_of_all(django_db_setup, tmp_path):
    metrics_folder = tmp_path / "prometheus"
    metrics_folder.mkdir()
    # Left by an earlier server: its counts must not add to this one's.
    leftover = metrics_folder / "histogram_1.db"
    leftover.write_bytes(b"an earlier server's counts")
    labels = {"route": MISSING_API_ROUTE, "method": "GET", "status": "404"}
    answered = 24

    with gunicorn_on_the_test_database(
        log_path=tmp_path / "web.log",
        environment={"PROMETHEUS_MULTIPROC_DIR": str(metrics_folder)},
    ) as base_url:
        assert not leftover.exists()
        for _ in range(answered):  # a connection each, so both processes take some
            assert requests.get(f"{base_url}{MISSING_API_PATH}", timeout=30).status_code == 404
        for _ in range(6):
            response = requests.get(f"{base_url}/metrics", timeout=30)
            assert response.status_code == 200
            assert value(samples_of(response.text), f"{REQUESTS}_count", **labels) == answered

    assert list(metrics_folder.glob("histogram_*.db"))
