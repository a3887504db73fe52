"""The experiments pages: admins start and stop experiments (refusals are form errors, never a
500), everyone in the project follows the figures; in a real browser the live figures and the
chart follow the ratings without a reload."""

import random

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from feedback.services.ratings import ratings_submit_batch
from flywheel.models import ExperimentArm, Interaction, ModelVersion
from flywheel.services.interactions import interaction_record
from flywheel.services.model_versions import model_version_production_ensure
from flywheel.services.traffic_splits import traffic_split_open_for
from retrain.experiments.evaluation import experiment_evaluate
from retrain.experiments.services import ExperimentParameters, experiment_start
from retrain.models import Experiment
from tests.conftest import SCREENSHOTS, user_with_role

START_FORM = {
    "candidate_percent": "20",
    "metric": "thumbs_up_rate",
    "min_ratings_per_arm": "10",
    "max_duration_hours": "24",
    "shadow_percent": "0",
    "stop_on_loss": "on",
    "error_rate_factor": "2",
    "latency_p95_factor": "2",
}


def _candidate(project, name: str = "lora-1") -> ModelVersion:
    model_version_production_ensure(project=project)
    return ModelVersion.objects.create(project=project, name=name, base_model="")


def _url(name: str, project, *args) -> str:
    return reverse(f"dashboard:{name}", args=[project.slug, *args])


@pytest.mark.django_db
def test_an_admin_starts_an_experiment_and_refusals_are_form_errors(client, project):
    candidate = _candidate(project)
    client.force_login(user_with_role(project, "admin"))

    page = client.get(_url("experiments", project))
    assert page.status_code == 200 and "Start an experiment" in page.content.decode()

    for field, value, expected in [
        ("candidate_percent", "100", "candidate_share must be above 0 and below 1"),
        ("candidate_percent", "nan", "Enter a number."),
        ("min_ratings_per_arm", "2", "Ensure this value is greater than or equal to 10."),
        ("max_duration_hours", "1e6", "max_duration_hours must be above 0"),
        ("shadow_percent", "150", "shadow_share must be from 0 (off) to 1."),
        ("min_ratings_per_arm", "99999999999999999999", "Ensure this value is less than"),
        ("error_rate_factor", "inf", "Enter a number."),
        ("max_duration_hours", "1\x00", "Enter a number."),
    ]:
        refused = client.post(
            _url("experiment_start", project),
            START_FORM | {"candidate_model": candidate.pk, field: value},
        )
        assert refused.status_code == 400
        errors = refused.context["form"].errors[field]
        assert any(error.startswith(expected) for error in errors), errors
    no_candidate = client.post(_url("experiment_start", project), START_FORM)
    assert no_candidate.status_code == 400
    assert no_candidate.context["form"].non_field_errors()[0].startswith("An experiment needs")
    assert not Experiment.objects.exists()

    started = client.post(
        _url("experiment_start", project), START_FORM | {"candidate_model": candidate.pk}
    )
    experiment = Experiment.objects.get()
    assert started.status_code == 302
    assert started["Location"] == _url("experiment_detail", project, experiment.pk)
    assert (experiment.candidate_share, experiment.started_by_name) == (
        0.2,
        "admin-" + project.slug,
    )
    again = client.post(
        _url("experiment_start", project), START_FORM | {"candidate_model": candidate.pk}
    )
    assert "already running" in again.context["form"].non_field_errors()[0]

    detail = client.get(started["Location"])
    assert "Undecided so far" in detail.content.decode()
    stopped = client.post(_url("experiment_stop", project, experiment.pk), {"reason": "enough"})
    assert stopped.status_code == 302
    experiment.refresh_from_db()
    assert (experiment.status, experiment.stop_reason) == ("stopped", "enough")
    assert traffic_split_open_for(project=project) is None


@pytest.mark.django_db
def test_viewers_follow_experiments_but_cannot_start_or_stop_them(client, project):
    experiment = experiment_start(
        project=project,
        parameters=ExperimentParameters(candidate_share=0.5, min_ratings_per_arm=10),
        candidate_model_version=_candidate(project),
    )
    client.force_login(user_with_role(project, "viewer"))

    listing = client.get(_url("experiments", project)).content.decode()
    assert f"#{experiment.pk}" in listing and "Start an experiment" not in listing
    assert client.get(_url("experiment_detail", project, experiment.pk)).status_code == 200
    assert client.get(_url("experiment_figures", project, experiment.pk)).status_code == 200
    assert client.post(_url("experiment_start", project), START_FORM).status_code == 403
    assert client.post(_url("experiment_stop", project, experiment.pk)).status_code == 403
    assert client.get(_url("experiment_detail", project, 999999)).status_code == 404
    experiment.refresh_from_db()
    assert experiment.status == "running"


def _rated_interactions(project, experiment, *, count: int, up: dict, seed: int) -> None:
    chance = random.Random(seed)
    ratings = []
    for number in range(count):
        arm = ExperimentArm.CANDIDATE if number % 2 else ExperimentArm.CONTROL
        interaction = interaction_record(
            project=project,
            source=Interaction.Source.CHAT,
            messages=[{"role": "user", "content": "Q?"}],
            query_text=f"Question {seed}-{number}?",
            response="A.",
            latency_ms=120,
            experiment_id=experiment.pk,
            experiment_arm=arm,
        )
        thumb = "up" if chance.random() < up[arm] else "down"
        ratings.append(
            {"interaction_id": interaction.pk, "rater_id": f"r{seed}-{number}", "thumb": thumb}
        )
    ratings_submit_batch(project=project, ratings=ratings, source="api")


def test_an_experiments_page_follows_its_figures_and_chart_without_a_reload(
    page, live_server, transactional_db, project
):
    admin = user_with_role(project, "admin")
    candidate = _candidate(project)
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", admin.username)
    page.fill("#id_password", f"pw-{admin.username}")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/dashboard/{project.slug}/")

    page.click("nav.sections >> text=Experiments")
    page.select_option("#id_candidate_model", str(candidate.pk))
    page.fill("#id_candidate_percent", "50")
    page.fill("#id_min_ratings_per_arm", "10")
    page.click("text=Start the experiment")
    expect(page.locator(".experiment-verdict")).to_contain_text("Undecided so far")
    experiment = Experiment.objects.get()
    page.evaluate("() => { window.__sameDocument = true; }")

    better = {ExperimentArm.CONTROL: 0.5, ExperimentArm.CANDIDATE: 0.55}
    _rated_interactions(project, experiment, count=40, up=better, seed=1)
    experiment_evaluate(experiment_id=experiment.pk)
    _rated_interactions(project, experiment, count=40, up=better, seed=2)
    experiment_evaluate(experiment_id=experiment.pk)

    expect(page.locator("tr.arm-candidate td").nth(1)).to_have_text("40")
    expect(page.locator("svg.sequence-chart polygon.chart-band")).to_have_count(1)
    assert page.evaluate("() => window.__sameDocument") is True
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "experiment-detail.png"), full_page=True)

    page.fill("input[name=reason]", "seen enough")
    page.click("text=Stop: production serves everyone")
    expect(page.locator("#experiment-live .experiment-status")).to_have_text("Stopped")
    expect(page.locator("#experiment-live")).not_to_have_attribute("hx-trigger", "every 5s")
    experiment.refresh_from_db()
    assert (experiment.status, experiment.stop_reason) == ("stopped", "seen enough")
