"""The job framework: lifecycle, cancellation, the reaper, and jobs run by a real worker."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from retrain.jobs.lifecycle import (
    InvalidJobParameters,
    JobCancelled,
    job_cancel,
    job_create,
    job_run,
    jobs_reap_stale,
)
from retrain.models import Job
from tests.conftest import bearer, wait_for


def _job(project, **fields) -> Job:
    return Job.objects.create(
        project=project, kind=Job.Kind.DATASET_SNAPSHOT, trigger="api", **fields
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "kind, parameters, message",
    [
        ("lora_training", {"r": 0}, "r"),
        ("lora_training", {"learning_rate": "fast"}, "learning_rate"),
        ("lora_training", {"colour": "blue"}, "colour"),
        ("evaluation", {}, "model_version is required"),
        ("index_refresh", {"golden_set": "../../etc/passwd"}, "golden_set"),
        ("index_refresh", {"activate": "yes"}, "activate"),
        ("teleport", {}, "unknown job kind"),
    ],
)
def test_bad_job_parameters_are_refused_and_nothing_is_queued(project, kind, parameters, message):
    with pytest.raises(InvalidJobParameters, match=message):
        job_create(project=project, kind=kind, trigger="api", parameters=parameters)
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_job_runs_to_success_with_progress_logs_and_metrics(project):
    job = _job(project)

    def handler(job, context):
        context.progress(50, "half way")
        context.log("did something")
        context.record_metrics(answer=42)

    assert job_run(job_id=job.pk, handler=handler) == "succeeded"
    job.refresh_from_db()
    assert (job.state, job.progress, job.attempts) == ("succeeded", 100, 1)
    assert job.metrics == {"answer": 42}
    assert "did something" in job.log_tail
    assert job.started_at <= job.finished_at
    assert job_run(job_id=job.pk, handler=handler) is None, "a finished job never runs again"


@pytest.mark.django_db
def test_a_failing_handler_fails_the_job_with_its_error(project):
    job = _job(project)

    def handler(job, context):
        raise RuntimeError("disk full")

    assert job_run(job_id=job.pk, handler=handler) == "failed"
    job.refresh_from_db()
    assert job.state == "failed" and "disk full" in job.error


@pytest.mark.django_db
def test_cancelling_stops_a_running_job_at_its_next_step_and_a_queued_one_at_once(project):
    queued = _job(project)
    cancelled = job_cancel(job=queued, by="alice from the dashboard")
    assert cancelled.state == "cancelled"
    assert cancelled.progress_message == "Cancelled before it started, by alice from the dashboard."
    assert job_run(job_id=queued.pk, handler=lambda job, context: None) is None

    running = _job(project)
    steps_done = []

    def handler(job, context):
        for step in range(10):
            if step == 3:
                job_cancel(job=job, by="bob from the admin")  # as from another request
            context.progress(step * 10)
            steps_done.append(step)

    assert job_run(job_id=running.pk, handler=handler) == "cancelled"
    assert steps_done == [0, 1, 2]
    running.refresh_from_db()
    assert running.state == "cancelled" and running.finished_at is not None
    assert running.progress_message == "Cancelled at 30%, by bob from the admin."


@pytest.mark.django_db
def test_the_reaper_retries_jobs_whose_worker_died_then_gives_up(project, settings):
    settings.FLYWHEEL_JOB_MAX_ATTEMPTS = 2
    long_ago = timezone.now() - timedelta(hours=1)
    dead_once = _job(project, state="running", heartbeat_at=long_ago, attempts=1)
    dead_twice = _job(project, state="running", heartbeat_at=long_ago, attempts=2)
    alive = _job(project, state="running", heartbeat_at=timezone.now(), attempts=1)
    forgotten = _job(project)
    Job.objects.filter(pk=forgotten.pk).update(created_at=long_ago)

    outcome = jobs_reap_stale()

    assert outcome == {
        "retried": [dead_once.pk],
        "failed": [dead_twice.pk],
        "requeued": [forgotten.pk],
    }
    states = dict(Job.objects.values_list("pk", "state"))
    assert states[dead_once.pk] == "queued"
    assert states[dead_twice.pk] == "failed"
    assert states[alive.pk] == "running"


def test_job_cancelled_is_an_exception_handlers_may_raise():
    assert issubclass(JobCancelled, Exception)


@pytest.mark.django_db(transaction=True)
def test_a_job_started_through_the_api_runs_on_a_worker(client, project, admin_key, celery_worker):
    response = client.post(
        "/api/v1/jobs",
        data=json.dumps({"kind": "dataset_snapshot"}),
        content_type="application/json",
        **bearer(admin_key),
    )
    assert response.status_code == 202
    job_id = response.json()["id"]

    def finished_job():
        job = client.get(f"/api/v1/jobs/{job_id}", **bearer(admin_key)).json()
        return job if job["state"] in {"succeeded", "failed", "cancelled"} else None

    finished = wait_for(finished_job, what="the snapshot job finishing", deadline_seconds=60)
    assert finished["state"] == "succeeded", finished["error"]
    assert finished["dataset_version_id"] is not None
    bad = client.post(
        "/api/v1/jobs",
        data=json.dumps({"kind": "lora_training", "parameters": {"r": -1}}),
        content_type="application/json",
        **bearer(admin_key),
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_job"


@pytest.mark.django_db
def test_following_a_job_reports_who_cancelled_it(project):
    # What `run_job --wait` and `follow_job` say at the end of a job cancelled meanwhile.
    queued = _job(project)
    job_cancel(job=queued, by="carol from the dashboard")
    out = StringIO()

    with pytest.raises(CommandError) as refused:
        call_command("follow_job", str(queued.pk), "--project", project.slug, stdout=out)

    assert str(refused.value) == (
        f"Job {queued.pk} cancelled: Cancelled before it started, by carol from the dashboard."
    )
    assert out.getvalue().startswith("cancelled 0% Cancelled before it started")
    with pytest.raises(CommandError, match="No job 999999"):
        call_command("follow_job", "999999", "--project", project.slug, stdout=out)
