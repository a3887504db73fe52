"""Canary experiments: starting one (and every refusal), a verdict from live ratings through the
sequential test, the experiment's policy (promote a winner, stop on a loss), the deadline,
the safety stop, and stopping or rolling back returning every request to production."""

import json
import random
from datetime import timedelta

import pytest
from django.utils import timezone

from feedback.services.ratings import ratings_submit_batch
from flywheel.models import (
    ApiKey,
    ExperimentArm,
    IndexVersion,
    Interaction,
    ModelVersion,
    OutboxMessage,
    ServingFailure,
    TrafficSplit,
)
from flywheel.services import api_key_create
from flywheel.services.interactions import interaction_record
from flywheel.services.model_versions import model_version_production_ensure
from flywheel.services.traffic_splits import arm_assign, traffic_split_open_for
from retrain.experiments.evaluation import experiment_evaluate
from retrain.experiments.services import (
    ExperimentParameters,
    ExperimentRefused,
    InvalidExperimentParameters,
    experiment_start,
    experiment_stop,
)
from retrain.experiments.statistics import (
    SCORES,
    THUMBS,
    ArmHealth,
    ArmSample,
    Verdict,
    compare,
    safety_breach,
)
from retrain.models import Experiment
from retrain.promotion import index_version_activate, model_version_promote
from retrain.tasks.experiments import experiment_evaluate_task
from tests.conftest import bearer, wait_for
from tests.factories import ProjectFactory

# ---------------------------------------------------------------------------------------------
# The sequential test, alone


def _thumbs(up: int, down: int) -> ArmSample:
    return ArmSample(up + down, up, up)


def _compare(control: ArmSample, candidate: ArmSample, **options) -> Verdict:
    settings = {"scale": THUMBS, "min_per_arm": 20, "margin": 0.1, "deadline_passed": False}
    return compare(control=control, candidate=candidate, **(settings | options)).verdict


def test_the_test_decides_only_what_its_confidence_sequence_shows():
    assert _compare(_thumbs(30, 70), _thumbs(80, 20)) == Verdict.CANDIDATE_WINS
    assert _compare(_thumbs(80, 20), _thumbs(30, 70)) == Verdict.CONTROL_WINS
    assert _compare(_thumbs(600, 400), _thumbs(600, 400)) == Verdict.NO_DIFFERENCE
    # A large difference on too few ratings waits for the minimum, then for the deadline.
    assert _compare(_thumbs(2, 8), _thumbs(9, 1)) == Verdict.UNDECIDED
    assert _compare(_thumbs(2, 8), _thumbs(9, 1), deadline_passed=True) == (Verdict.NOT_ENOUGH_DATA)
    # Equal arms, but not yet enough ratings to show the difference is under the margin.
    assert _compare(_thumbs(30, 20), _thumbs(30, 20)) == Verdict.UNDECIDED
    assert _compare(_thumbs(0, 0), _thumbs(5, 5), deadline_passed=True) == (Verdict.NOT_ENOUGH_DATA)


def test_the_test_reads_scores_on_their_own_scale():
    low = ArmSample(200, 200 * 3.0, 200 * 9.5)  # mean 3, variance 0.5
    high = ArmSample(200, 200 * 4.0, 200 * 16.5)  # mean 4, variance 0.5
    comparison = compare(
        control=low,
        candidate=high,
        scale=SCORES,
        min_per_arm=20,
        margin=0.2,
        deadline_passed=False,
    )
    assert comparison.verdict == Verdict.CANDIDATE_WINS
    assert comparison.difference.estimate == pytest.approx(1.0)
    assert 0 < comparison.difference.low < 1 < comparison.difference.high
    assert comparison.probability_candidate_better > 0.99


def test_the_safety_check_compares_error_rates_and_latency_with_control():
    healthy = ArmHealth(requests=200, failures=0, latency_p95_ms=400)
    check = {"error_rate_factor": 2, "latency_p95_factor": 2, "min_requests": 20}
    failing = ArmHealth(requests=30, failures=10, latency_p95_ms=400)
    assert "error rate" in safety_breach(control=healthy, candidate=failing, **check)
    slow = ArmHealth(requests=30, failures=0, latency_p95_ms=900)
    assert "latency p95" in safety_breach(control=healthy, candidate=slow, **check)
    fine = ArmHealth(requests=30, failures=0, latency_p95_ms=500)
    assert safety_breach(control=healthy, candidate=fine, **check) == ""
    # Too few requests yet to judge.
    early = ArmHealth(requests=5, failures=5, latency_p95_ms=900)
    assert safety_breach(control=healthy, candidate=early, **check) == ""


# ---------------------------------------------------------------------------------------------
# Starting, and every refusal


def _candidate(project, name: str = "lora-1") -> ModelVersion:
    model_version_production_ensure(project=project)
    return ModelVersion.objects.create(project=project, name=name, base_model="")


def _start(project, candidate=None, *, index=None, **parameters) -> Experiment:
    settings = {"candidate_share": 0.5, "min_ratings_per_arm": 20} | parameters
    return experiment_start(
        project=project,
        parameters=ExperimentParameters(**settings),
        candidate_model_version=candidate,
        candidate_index_version=index,
        actor="test",
    )


@pytest.fixture
def versions_key(project) -> str:
    return api_key_create(
        project=project, kind="secret", name="ops", scopes=["versions", "read"]
    ).raw_key


def _post(client, key: str, path: str, body: dict | None = None):
    return client.post(
        path, data=json.dumps(body or {}), content_type="application/json", **bearer(key)
    )


def _error(response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["code"], error.get("param")


@pytest.mark.django_db
def test_starting_opens_the_traffic_split_and_a_second_experiment_is_refused(
    client, project, versions_key
):
    candidate = _candidate(project)
    response = _post(
        client,
        versions_key,
        "/api/v1/experiments",
        {"candidate_model": "lora-1", "candidate_share": 0.1, "min_ratings_per_arm": 50},
    )
    assert response.status_code == 201, response.content
    started = response.json()
    assert (started["status"], started["verdict"], started["candidate_model"]) == (
        "running",
        "",
        "lora-1",
    )
    assert started["arms"]["control"]["ratings"] == started["arms"]["candidate"]["ratings"] == 0
    assert started["no_difference_margin"] == pytest.approx(0.05)
    split = traffic_split_open_for(project=project)
    assert (split.experiment_id, split.candidate_model_version, split.candidate_share) == (
        started["id"],
        candidate,
        0.1,
    )

    with pytest.raises(ExperimentRefused) as refused:
        _start(project, _candidate(project, "lora-2"))
    again = _post(client, versions_key, "/api/v1/experiments", {"candidate_model": "lora-2"})
    assert refused.value.code == "experiment_already_running"
    assert _error(again) == (409, "experiment_already_running", None)
    assert Experiment.objects.filter(project=project).count() == 1

    listed = client.get("/api/v1/experiments", **bearer(versions_key)).json()
    assert [experiment["id"] for experiment in listed] == [started["id"]]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"candidate_share": 0}, (400, "invalid_experiment", "candidate_share")),
        ({"candidate_share": 1}, (400, "invalid_experiment", "candidate_share")),
        ({"candidate_share": -0.5}, (400, "invalid_experiment", "candidate_share")),
        ({"shadow_share": 1.5}, (400, "invalid_experiment", "shadow_share")),
        ({"min_ratings_per_arm": 3}, (400, "invalid_experiment", "min_ratings_per_arm")),
        ({"max_duration_hours": 0}, (400, "invalid_experiment", "max_duration_hours")),
        ({"max_duration_hours": 1e300}, (400, "invalid_experiment", "max_duration_hours")),
        ({"error_rate_factor": 0.5}, (400, "invalid_experiment", "error_rate_factor")),
        ({"no_difference_margin": 2}, (400, "invalid_experiment", "no_difference_margin")),
        ({"metric": "clicks"}, (400, "invalid_request", "metric")),
        ({"candidate_model": None}, (409, "no_candidate", None)),
        ({"candidate_model": "base"}, (409, "not_a_candidate", None)),
        ({"candidate_model": "nope"}, (404, "not_found", "candidate_model")),
        ({"candidate_index_version": 7}, (404, "not_found", "candidate_index_version")),
    ],
)
def test_every_refused_start_is_a_json_error_and_starts_nothing(
    client, project, versions_key, body, expected
):
    _candidate(project)
    response = _post(
        client, versions_key, "/api/v1/experiments", {"candidate_model": "lora-1"} | body
    )
    assert _error(response) == expected
    assert not Experiment.objects.exists()
    assert not TrafficSplit.objects.exists()


@pytest.mark.django_db
def test_an_index_still_building_cannot_be_the_candidate(project):
    building = IndexVersion.objects.create(project=project, number=2, embedding_model="m")
    with pytest.raises(ExperimentRefused) as refused:
        _start(project, index=building)
    assert refused.value.code == "index_not_ready"
    with pytest.raises(InvalidExperimentParameters) as invalid:
        _start(project, _candidate(project), candidate_share=1.0)
    assert invalid.value.param == "candidate_share"


@pytest.mark.django_db
def test_another_change_of_production_ends_the_experiment_it_would_invalidate(project):
    # Promoting by hand changes what control serves: the comparison is over.
    experiment = _start(project, _candidate(project))
    other = ModelVersion.objects.create(project=project, name="lora-2", base_model="")
    model_version_promote(version=other, reason="urgent fix", actor="ops")
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.STOPPED
    assert "lora-2 was put in production" in experiment.stop_reason
    assert traffic_split_open_for(project=project) is None

    # A new active index changes both arms alike when both read the active index ...
    ready = {"embedding_model": "m", "status": IndexVersion.Status.READY}
    model_only = _start(project, _candidate(project, "lora-3"))
    index_version_activate(version=IndexVersion.objects.create(project=project, number=7, **ready))
    model_only.refresh_from_db()
    assert model_only.status == Experiment.Status.RUNNING
    experiment_stop(experiment=model_only, reason="", actor="test")

    # ... but not when the candidate arm has an index of its own.
    candidate_index = IndexVersion.objects.create(project=project, number=8, **ready)
    with_index = _start(project, index=candidate_index)
    index_version_activate(version=IndexVersion.objects.create(project=project, number=9, **ready))
    with_index.refresh_from_db()
    assert with_index.status == Experiment.Status.STOPPED
    assert "v9 became the active index" in with_index.stop_reason


# ---------------------------------------------------------------------------------------------
# Verdicts from ratings


def _serve_and_rate(
    project, experiment, *, people: int, up_probability: dict[str, float], seed: int
) -> list[dict]:
    """`people` people each asked once, in the arm the experiment's split assigns them; each
    rates the answer thumbs up with their arm's probability. The ratings, for the API."""
    split = traffic_split_open_for(project=project)
    chance = random.Random(seed)
    ratings = []
    for person in range(people):
        user = f"person-{seed}-{person}"
        assignment = arm_assign(split=split, user=user)
        interaction = interaction_record(
            project=project,
            source=Interaction.Source.CHAT,
            messages=[{"role": "user", "content": f"Question {person}?"}],
            query_text=f"Question {person}?",
            response="An answer.",
            end_user_id=user,
            latency_ms=100,
            experiment_id=experiment.pk,
            experiment_arm=assignment.arm,
            assignment_unit=assignment.unit,
        )
        thumb = "up" if chance.random() < up_probability[assignment.arm] else "down"
        ratings.append({"interaction_id": interaction.pk, "rater_id": user, "thumb": thumb})
    return ratings


def _as_json(ratings: list[dict]) -> list[dict]:
    return [rating | {"interaction_id": str(rating["interaction_id"])} for rating in ratings]


@pytest.mark.django_db
def test_equal_arms_end_with_no_difference_and_nothing_is_promoted(project):
    candidate = _candidate(project)
    experiment = _start(project, candidate, no_difference_margin=0.25, auto_promote=True)
    equal = {ExperimentArm.CONTROL: 0.6, ExperimentArm.CANDIDATE: 0.6}
    ratings = _serve_and_rate(project, experiment, people=320, up_probability=equal, seed=7)
    ratings_submit_batch(project=project, ratings=ratings, source="api")

    experiment = experiment_evaluate(experiment_id=experiment.pk)

    assert (experiment.status, experiment.verdict) == ("finished", "no_difference")
    low, high = experiment.evidence["difference"]["low"], experiment.evidence["difference"]["high"]
    assert -0.25 < low < 0 < high < 0.25
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.CANDIDATE
    assert candidate.metrics["experiment"]["decision"] == "no_difference"
    assert traffic_split_open_for(project=project) is None


@pytest.mark.django_db
def test_a_winning_index_on_mean_score_is_activated(project):
    active = IndexVersion.objects.create(
        project=project, number=1, embedding_model="m", status=IndexVersion.Status.ACTIVE
    )
    ready = IndexVersion.objects.create(
        project=project, number=2, embedding_model="m", status=IndexVersion.Status.READY
    )
    experiment = _start(project, index=ready, metric="mean_score", auto_promote=True)
    chance = random.Random(9)
    ratings = []
    for number in range(80):
        arm = ExperimentArm.CANDIDATE if number % 2 else ExperimentArm.CONTROL
        interaction = interaction_record(
            project=project,
            source=Interaction.Source.CHAT,
            messages=[{"role": "user", "content": "Q?"}],
            query_text=f"Q{number}?",
            response="A.",
            experiment_id=experiment.pk,
            experiment_arm=arm,
        )
        scores = (4, 5, 5) if arm == ExperimentArm.CANDIDATE else (2, 3, 3)
        ratings.append(
            {"interaction_id": interaction.pk, "rater_id": "r", "score": chance.choice(scores)}
        )
    ratings_submit_batch(project=project, ratings=ratings, source="api")

    experiment = experiment_evaluate(experiment_id=experiment.pk)

    assert (experiment.status, experiment.verdict) == ("finished", "candidate_wins")
    arms = experiment.evidence["arms"]
    assert (arms["control"]["scored"], arms["candidate"]["scored"]) == (40, 40)
    assert 2 < arms["control"]["metric"] < 3 < 4 < arms["candidate"]["metric"] < 5
    assert experiment.evidence["promotion"] == {"index_version": {"activated": 2}}
    ready.refresh_from_db()
    active.refresh_from_db()
    assert (ready.status, active.status) == ("active", "retired")


@pytest.mark.django_db
def test_a_loss_stops_the_experiment_early_when_its_policy_says_so(project):
    keeps_running = _start(project, _candidate(project), stop_on_loss=False)
    worse = {ExperimentArm.CONTROL: 0.9, ExperimentArm.CANDIDATE: 0.2}
    ratings = _serve_and_rate(project, keeps_running, people=120, up_probability=worse, seed=3)
    ratings_submit_batch(project=project, ratings=ratings, source="api")

    keeps_running = experiment_evaluate(experiment_id=keeps_running.pk)
    assert (keeps_running.status, keeps_running.verdict) == ("running", "control_wins")
    Experiment.objects.filter(pk=keeps_running.pk).update(ends_at=timezone.now())
    keeps_running = experiment_evaluate(experiment_id=keeps_running.pk)
    assert (keeps_running.status, keeps_running.verdict) == ("finished", "control_wins")

    stops = _start(project, _candidate(project, "lora-2"), stop_on_loss=True)
    ratings = _serve_and_rate(project, stops, people=120, up_probability=worse, seed=4)
    ratings_submit_batch(project=project, ratings=ratings, source="api")
    stops = experiment_evaluate(experiment_id=stops.pk)
    assert (stops.status, stops.verdict) == ("finished", "control_wins")
    assert traffic_split_open_for(project=project) is None
    assert stops.candidate_model_version.metrics["experiment"]["decision"] == "control_wins"


@pytest.mark.django_db
def test_the_deadline_without_a_verdict_is_not_enough_data(project):
    experiment = _start(project, _candidate(project))
    some = {ExperimentArm.CONTROL: 0.5, ExperimentArm.CANDIDATE: 0.5}
    ratings = _serve_and_rate(project, experiment, people=12, up_probability=some, seed=5)
    ratings_submit_batch(project=project, ratings=ratings, source="api")
    assert experiment_evaluate(experiment_id=experiment.pk).status == "running"

    Experiment.objects.filter(pk=experiment.pk).update(ends_at=timezone.now() - timedelta(1))
    experiment = experiment_evaluate(experiment_id=experiment.pk)

    assert (experiment.status, experiment.verdict) == ("finished", "not_enough_data")
    assert experiment.stopped_by_name == "verdict"
    assert traffic_split_open_for(project=project) is None


@pytest.mark.django_db
def test_a_candidate_failing_more_often_than_control_is_stopped(project):
    experiment = _start(project, _candidate(project))
    served = {ExperimentArm.CONTROL: 40, ExperimentArm.CANDIDATE: 20}
    for arm, count in served.items():
        for number in range(count):
            interaction_record(
                project=project,
                source=Interaction.Source.CHAT,
                messages=[{"role": "user", "content": "Q?"}],
                query_text=f"Q{number}?",
                response="A.",
                latency_ms=100,
                experiment_id=experiment.pk,
                experiment_arm=arm,
            )
    ServingFailure.objects.bulk_create(
        ServingFailure(
            project=project,
            experiment_id=experiment.pk,
            experiment_arm=ExperimentArm.CANDIDATE,
            kind=ServingFailure.Kind.GENERATION_ERROR,
        )
        for _ in range(8)
    )

    experiment = experiment_evaluate(experiment_id=experiment.pk)

    assert experiment.status == "stopped" and experiment.verdict == ""
    assert experiment.stopped_by_name == "safety check"
    assert "error rate (8 of 28 requests)" in experiment.stop_reason
    assert traffic_split_open_for(project=project) is None


@pytest.mark.django_db
def test_a_batch_of_ratings_queues_one_evaluation(project):
    experiment = _start(project, _candidate(project))
    some = {ExperimentArm.CONTROL: 0.5, ExperimentArm.CANDIDATE: 0.5}
    ratings = _serve_and_rate(project, experiment, people=30, up_probability=some, seed=6)
    ratings_submit_batch(project=project, ratings=ratings, source="api")
    queued = OutboxMessage.objects.filter(task_name=experiment_evaluate_task.name)
    assert list(queued.values_list("args", flat=True)) == [[experiment.pk]]


# ---------------------------------------------------------------------------------------------
# Live: ratings through the API, evaluation on a real worker


@pytest.fixture(scope="module")
def evaluation_worker(django_db_setup, tmp_path_factory):
    """A real worker on the default queue, where experiment evaluations run (the curation
    that ratings also queue waits on its own queue, untouched)."""
    from django.db import connection

    from config.settings.database import database_url_from_config
    from tests.conftest import worker_start

    worker = worker_start(
        database_url=database_url_from_config(connection.settings_dict),
        log_path=tmp_path_factory.mktemp("celery") / "worker.log",
        queues=["default"],
        name="experiments",
    )
    yield worker
    worker.stop()


def test_raters_preferring_the_candidate_make_it_win_and_promote_it(
    transactional_db, client, evaluation_worker
):
    project = ProjectFactory()
    candidate = _candidate(project)
    versions_key = api_key_create(
        project=project, kind="secret", name="ops", scopes=ApiKey.Scope.values
    ).raw_key
    started = _post(
        client,
        versions_key,
        "/api/v1/experiments",
        {
            "candidate_model": "lora-1",
            "candidate_share": 0.5,
            "min_ratings_per_arm": 20,
            "auto_promote": True,
        },
    ).json()
    experiment = Experiment.objects.get(pk=started["id"])
    better = {ExperimentArm.CONTROL: 0.3, ExperimentArm.CANDIDATE: 0.85}
    ratings = _serve_and_rate(project, experiment, people=160, up_probability=better, seed=11)

    # The ratings arrive in batches, as from many raters; each batch queues an evaluation.
    for first in range(0, len(ratings), 40):
        response = _post(
            client,
            versions_key,
            "/api/v1/ratings",
            {"ratings": _as_json(ratings[first : first + 40])},
        )
        assert response.status_code == 201, response.content

    def decided():
        experiment.refresh_from_db()
        return experiment.status != "running"

    wait_for(decided, what="the worker's verdict", deadline_seconds=60)
    assert experiment.verdict == "candidate_wins", experiment.evidence
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.PRODUCTION
    promotion = candidate.metrics["promotion"]
    assert (promotion["basis"], promotion["by"]) == ("experiment", f"experiment #{experiment.pk}")
    assert promotion["reason"].startswith(f"Experiment #{experiment.pk}: candidate wins")
    assert experiment.evidence["promotion"] == {"model_version": {"promoted": "lora-1"}}
    detail = client.get(f"/api/v1/experiments/{experiment.pk}", **bearer(versions_key)).json()
    assert detail["verdict"] == "candidate_wins" and detail["status"] == "finished"
    arms = detail["arms"]
    assert arms["candidate"]["metric"] > arms["control"]["metric"]
    assert arms["candidate"]["ratings"] + arms["control"]["ratings"] == 160
    assert detail["difference"]["low"] > 0 and detail["probability_candidate_better"] > 0.99
    assert traffic_split_open_for(project=project) is None


# ---------------------------------------------------------------------------------------------
# Stopping and rolling back: the next chat request is production's


def _ask(client, key: str, user: str) -> Interaction:
    response = _post(
        client,
        key,
        "/v1/chat/completions",
        {
            "model": "flywheel",
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 1,
            "user": user,
            "flywheel": {"rag": False},
        },
    )
    assert response.status_code == 200, response.content
    return Interaction.objects.get(pk=response.json()["flywheel"]["interaction_id"])


def _candidate_arm_user(project) -> str:
    split = traffic_split_open_for(project=project)
    return next(
        user
        for user in (f"user-{number}" for number in range(1000))
        if arm_assign(split=split, user=user).arm == ExperimentArm.CANDIDATE
    )


@pytest.mark.django_db
def test_stopping_or_rolling_back_returns_the_next_request_to_production(client, project):
    key = api_key_create(
        project=project, kind="secret", name="app", scopes=ApiKey.Scope.values
    ).raw_key
    base = model_version_production_ensure(project=project)
    first = ModelVersion.objects.create(project=project, name="v1", base_model="")
    model_version_promote(version=first, reason="the first fine-tune")
    experiment = _start(project, _candidate(project, "lora-2"), candidate_share=0.5)
    user = _candidate_arm_user(project)

    in_experiment = _ask(client, key, user)
    assert (in_experiment.experiment_id, in_experiment.experiment_arm) == (
        experiment.pk,
        "candidate",
    )
    assert in_experiment.model_version.name == "lora-2"
    stopped = _post(client, key, f"/api/v1/experiments/{experiment.pk}/stop", {"reason": "done"})
    assert stopped.json()["status"] == "stopped"
    assert _error(_post(client, key, f"/api/v1/experiments/{experiment.pk}/stop")) == (
        409,
        "experiment_not_running",
        None,
    )
    after_stop = _ask(client, key, user)
    assert (after_stop.experiment_id, after_stop.model_version) == (None, first)

    experiment = _start(project, _candidate(project, "lora-3"), candidate_share=0.5)
    user = _candidate_arm_user(project)
    assert _ask(client, key, user).model_version.name == "lora-3"
    rolled_back = _post(client, key, "/api/v1/model-versions/rollback")
    assert rolled_back.status_code == 200
    experiment.refresh_from_db()
    assert experiment.status == "stopped"
    assert experiment.stop_reason == "Production was rolled back to base."
    after_rollback = _ask(client, key, user)
    assert (after_rollback.experiment_id, after_rollback.model_version) == (None, base)
    with pytest.raises(ExperimentRefused):
        experiment_stop(experiment=experiment)


@pytest.mark.django_db
def test_the_admin_lists_experiments_and_stops_them(client, project):
    from django.contrib.auth import get_user_model
    from django.urls import reverse

    experiment = _start(project, _candidate(project))
    client.force_login(get_user_model().objects.create_superuser(username="root", password="pw"))
    changelist = reverse("admin:retrain_experiment_changelist")
    assert client.get(changelist).status_code == 200

    stopped = client.post(
        changelist, {"action": "stop", "_selected_action": [experiment.pk]}, follow=True
    )
    again = client.post(
        changelist, {"action": "stop", "_selected_action": [experiment.pk]}, follow=True
    )

    assert [str(message) for message in stopped.context["messages"]] == [
        f"Stopped experiment #{experiment.pk}."
    ]
    assert [str(message) for message in again.context["messages"]] == [
        f"Experiment #{experiment.pk} is not running; it is stopped."
    ]
    experiment.refresh_from_db()
    assert (experiment.status, experiment.stopped_by_name) == ("stopped", "root")
