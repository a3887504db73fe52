"""A job's page in a real browser: its progress and loss chart follow the Job row without a
reload, the polling stops once the job is finished, and hostile text never runs."""

from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from retrain.models import Job

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'


def _detail_url(live_server, job: Job) -> str:
    path = reverse("dashboard:job_detail", args=[job.project.slug, job.pk])
    return f"{live_server.url}{path}"


def _loss_points_drawn(page) -> int:
    return page.evaluate(
        "() => window.Chart.getChart(document.getElementById('loss-chart'))"
        ".data.datasets[0].data.length"
    )


def test_a_running_training_jobs_page_follows_its_progress_without_a_reload(
    signed_in_page, live_server, project
):
    job = Job.objects.create(
        project=project,
        kind=Job.Kind.LORA_TRAINING,
        trigger=Job.Trigger.API,
        state=Job.State.RUNNING,
        started_at=timezone.now(),
        progress=20,
        progress_message="Step 2 of 10, loss 2.1000",
        metrics={"loss_curve": [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.1}]},
    )
    page = signed_in_page
    page.goto(_detail_url(live_server, job))

    expect(page.locator("#job-progress-bar")).to_have_attribute("value", "20")
    expect(page.locator(".job-message")).to_have_text("Step 2 of 10, loss 2.1000")
    assert page.locator("canvas#loss-chart").count() == 1
    assert _loss_points_drawn(page) == 2
    # Marks that a reload would wipe out: the window's and the chart's own.
    page.evaluate(
        "() => { window.__sameDocument = true;"
        " window.__lossChart = window.Chart.getChart(document.getElementById('loss-chart')); }"
    )

    Job.objects.filter(pk=job.pk).update(
        progress=60,
        progress_message="Step 6 of 10, loss 1.2000",
        metrics={
            "loss_curve": [
                {"step": 1, "loss": 2.5},
                {"step": 2, "loss": 2.1},
                {"step": 6, "loss": 1.2},
            ]
        },
    )

    page.wait_for_function("() => document.getElementById('job-progress-bar').value === 60")
    expect(page.locator(".job-message")).to_have_text("Step 6 of 10, loss 1.2000")
    expect(page.locator(".job-progress-percent")).to_have_text("60%")
    page.wait_for_function(
        "() => window.Chart.getChart(document.getElementById('loss-chart'))"
        ".data.datasets[0].data.length === 3"
    )
    assert page.evaluate("() => window.__sameDocument") is True
    assert page.evaluate(
        "() => window.Chart.getChart(document.getElementById('loss-chart')) === window.__lossChart"
    )

    Job.objects.filter(pk=job.pk).update(
        state=Job.State.SUCCEEDED, progress=100, progress_message="Done", finished_at=timezone.now()
    )

    expect(page.locator("#job-live .job-state")).to_have_text("Succeeded")
    expect(page.locator("#job-live")).not_to_have_attribute("hx-trigger", "every 2s")
    assert page.evaluate("() => window.__sameDocument") is True
    assert _loss_points_drawn(page) == 3
    assert page.problems == []


def test_hostile_text_in_a_jobs_log_and_error_is_shown_literally(
    signed_in_page, live_server, project
):
    job = Job.objects.create(
        project=project,
        kind=Job.Kind.EVALUATION,
        trigger=Job.Trigger.API,
        state=Job.State.FAILED,
        progress_message=XSS,
        log_tail=XSS,
        error=XSS,
        finished_at=timezone.now(),
    )
    page = signed_in_page

    page.goto(_detail_url(live_server, job))

    expect(page.locator("pre.job-log")).to_have_text(XSS)
    expect(page.locator(".job-error pre")).to_have_text(XSS)
    expect(page.locator(".job-message")).to_have_text(XSS)
    assert page.locator("img[src=x]").count() == 0
    assert page.evaluate("window.__xss") is None
    assert page.problems == []
