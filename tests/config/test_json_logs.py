"""LOG_FORMAT=json: one JSON object per line, carrying the request id of a real request (taken
from X-Request-ID or made up, and echoed) and, on a real Celery worker, the task and job ids."""

import io
import json
import logging
from datetime import datetime

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.utils.module_loading import import_string

from config.queues import Queue
from config.settings.database import database_url_from_config
from retrain.jobs.lifecycle import job_create
from retrain.models import Job
from tests.conftest import gunicorn_on_the_test_database, wait_for, worker_start

# An API path no endpoint has: Django logs its 404 (logger django.request).
MISSING_API_PATH = "/api/v1/no-such-endpoint"
JOB_DEADLINE_SECONDS = 90


def json_lines(text: str) -> list[dict]:
    """The JSON lines of a log another process is writing; its unfinished last line is left."""
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.startswith("{")]


@pytest.fixture
def root_log_as_json():
    """The root logger's output during the test, written the way LOG_FORMAT=json configures the
    console handler (the formatter and filter named in settings.LOGGING)."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(import_string(settings.LOGGING["formatters"]["json"]["()"])())
    handler.addFilter(import_string(settings.LOGGING["filters"]["log_context"]["()"])())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield output
    finally:
        root.removeHandler(handler)


def _not_found_record(output: io.StringIO) -> dict:
    records = [
        record
        for record in json_lines(output.getvalue())
        if record["logger"] == "django.request" and MISSING_API_PATH in record["message"]
    ]
    assert len(records) == 1, output.getvalue()
    return records[0]


@pytest.mark.django_db
def test_a_request_logs_json_with_the_callers_request_id(client, root_log_as_json):
    response = client.get(MISSING_API_PATH, HTTP_X_REQUEST_ID="probe-42.a:b")

    assert response.status_code == 404
    assert response["X-Request-ID"] == "probe-42.a:b"
    record = _not_found_record(root_log_as_json)
    assert record["request_id"] == "probe-42.a:b"
    assert record["level"] == "WARNING"
    assert datetime.fromisoformat(record["timestamp"]).utcoffset().total_seconds() == 0
    assert "task_id" not in record and "job_id" not in record


@pytest.mark.django_db
@pytest.mark.parametrize(
    "incoming", [None, "a request id with spaces", "x" * 129, 'quote"break'], ids=str
)
def test_a_request_without_an_acceptable_id_gets_a_new_one(client, root_log_as_json, incoming):
    headers = {} if incoming is None else {"HTTP_X_REQUEST_ID": incoming}

    response = client.get(MISSING_API_PATH, **headers)

    request_id = response["X-Request-ID"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    assert _not_found_record(root_log_as_json)["request_id"] == request_id


@pytest.mark.django_db
def test_two_requests_carry_their_own_ids(client, root_log_as_json):
    first = client.get(MISSING_API_PATH)["X-Request-ID"]
    second = client.get(MISSING_API_PATH)["X-Request-ID"]

    assert first != second
    logged = [
        record["request_id"]
        for record in json_lines(root_log_as_json.getvalue())
        if record["logger"] == "django.request"
    ]
    assert logged == [first, second]


@pytest.mark.django_db(transaction=True)
def test_a_job_on_a_real_worker_logs_json_with_its_task_and_job_ids(project, tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "json")
    worker = worker_start(
        database_url=database_url_from_config(connection.settings_dict),
        log_path=tmp_path / "worker.log",
        queues=[queue.value for queue in Queue],
        name="json-logs",
    )
    try:
        job = job_create(project=project, kind=Job.Kind.DATASET_SNAPSHOT, trigger=Job.Trigger.API)

        def the_jobs_task_logged() -> list[dict]:
            return [
                record
                for record in json_lines(worker.log_path.read_text())
                if record.get("job_id") == job.pk
            ]

        records = wait_for(
            the_jobs_task_logged,
            what="the job's task logging",
            deadline_seconds=JOB_DEADLINE_SECONDS,
        )
    finally:
        worker.stop()

    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    finished = [record for record in records if "succeeded" in record["message"]]
    assert finished, records
    # Celery's own line names the task by its id: the same id the record carries.
    assert f"[{finished[0]['task_id']}]" in finished[0]["message"]
    assert finished[0]["logger"] == "celery.app.trace"
    # Outside a task, a worker's lines carry no task id.
    everything = json_lines(worker.log_path.read_text())
    assert any("task_id" not in record for record in everything)
    assert all({"timestamp", "level", "logger", "message"} <= set(record) for record in everything)


def test_under_gunicorn_every_line_is_json_and_a_request_carries_its_id(django_db_setup, tmp_path):
    log_path = tmp_path / "web.log"
    with gunicorn_on_the_test_database(
        log_path=log_path, environment={"LOG_FORMAT": "json"}
    ) as base_url:
        response = requests.get(
            f"{base_url}{MISSING_API_PATH}", headers={"X-Request-ID": "probe-7"}, timeout=30
        )
        assert response.headers["X-Request-ID"] == "probe-7"

        def the_requests_lines() -> dict[str, dict]:
            by_logger = {
                record["logger"]: record
                for record in json_lines(log_path.read_text())
                if record.get("request_id") == "probe-7"
            }
            return by_logger if len(by_logger) == 2 else {}

        lines = wait_for(the_requests_lines, what="the request's log lines", deadline_seconds=30)

    assert MISSING_API_PATH in lines["django.request"]["message"]
    assert f'GET {MISSING_API_PATH} HTTP/1.1" 404' in lines["gunicorn.access"]["message"]
    # gunicorn's own lines too: its start, its workers, the access log and its stop.
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    loggers = {record["logger"] for record in records}
    assert {"gunicorn.error", "gunicorn.access", "django.request"} <= loggers
    assert all({"timestamp", "level", "logger", "message"} <= set(record) for record in records)
