"""Traffic splits: while an experiment runs, requests for `flywheel` are served by the arm their
person is assigned — the same arm every time — and the interaction records it; naming a model
bypasses the experiment; closing the split returns the next request to production.

Chat requests go through the API to the bundled model (4 tokens each) over a two-document
knowledge base."""

import json
import socket
from itertools import count

import pytest

from flywheel.models import (
    ExperimentArm,
    IndexVersion,
    Interaction,
    ModelVersion,
    Project,
    ServingFailure,
    TrafficSplit,
)
from flywheel.services import documents_load_folder
from flywheel.services.model_versions import model_version_production_ensure
from flywheel.services.traffic_splits import (
    TrafficSplitConflict,
    TrafficSplitInvalid,
    arm_assign,
    traffic_split_close,
    traffic_split_open,
    traffic_split_open_for,
)
from retrain.index_refresh.build import index_version_build
from tests.conftest import bearer, free_port, index_folder
from tests.factories import ProjectFactory

QUESTION = "How soon are refunds paid?"
USERS = [f"user-{n}" for n in range(2000)]
EXPERIMENT = 101
# The request field each assignment unit reads.
ID_FIELD = {"user": "user", "rater": "rater_id", "session": "session_id"}


@pytest.fixture
def served_project(project, tmp_path) -> Project:
    folder = tmp_path / "knowledge"
    folder.mkdir()
    (folder / "refunds.md").write_text("# Refunds\n\nRefunds are paid within 14 days.\n")
    index_folder(project, folder)
    return project


@pytest.fixture
def candidate_model(served_project) -> ModelVersion:
    return ModelVersion.objects.create(project=served_project, name="lora-candidate", base_model="")


@pytest.fixture
def candidate_index(served_project, tmp_path) -> IndexVersion:
    """A ready (not active) index version that also holds a document the active one lacks."""
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "shipping.md").write_text("# Shipping\n\nParcels ship within 2 days.\n")
    documents_load_folder(project=served_project, folder=folder)
    return index_version_build(project=served_project, corrections=[])


@pytest.fixture
def split(served_project, candidate_model, candidate_index) -> TrafficSplit:
    return traffic_split_open(
        project=served_project,
        experiment_id=EXPERIMENT,
        candidate_model_version=candidate_model,
        candidate_index_version=candidate_index,
        candidate_share=0.5,
    )


def person_in(split: TrafficSplit, arm: str, unit: str = "user") -> str:
    """The first id of the form `<unit>-<n>` that the split assigns to `arm`."""
    for number in count():
        value = f"{unit}-{number}"
        if arm_assign(split=split, **{ID_FIELD[unit]: value}).arm == arm:
            return value
    raise AssertionError("unreachable")


def ask(client, key: str, *, model: str = "flywheel", user: str | None = None, **flywheel):
    body: dict = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 4,
        "flywheel": flywheel,
    }
    if user is not None:
        body["user"] = user
    response = client.post(
        "/v1/chat/completions",
        data=json.dumps(body),
        content_type="application/json",
        **bearer(key),
    )
    assert response.status_code == 200, response.content
    completion = response.json()
    return completion, Interaction.objects.get(pk=completion["flywheel"]["interaction_id"])


def served_by_production(interaction: Interaction, project: Project) -> bool:
    active = IndexVersion.objects.get(project=project, status=IndexVersion.Status.ACTIVE)
    production = model_version_production_ensure(project=project)
    return (interaction.model_version, interaction.index_version) == (production, active)


@pytest.mark.parametrize("share", [0.1, 0.5])
def test_shares_of_2000_people_land_within_three_points_of_the_target(share):
    split = TrafficSplit(experiment_id=EXPERIMENT, candidate_share=share)

    assignments = [arm_assign(split=split, user=user) for user in USERS]

    candidates = sum(a.arm == ExperimentArm.CANDIDATE for a in assignments)
    assert abs(candidates / len(USERS) - share) <= 0.03
    assert {a.unit for a in assignments} == {"user"}
    # Stable: the same person draws the same arm again.
    assert [arm_assign(split=split, user=user) for user in USERS] == assignments


def test_each_experiment_draws_afresh_and_ids_count_in_order_user_rater_session():
    first = TrafficSplit(experiment_id=1, candidate_share=0.5)
    second = TrafficSplit(experiment_id=2, candidate_share=0.5)

    moved = sum(
        arm_assign(split=first, user=user).arm != arm_assign(split=second, user=user).arm
        for user in USERS
    )

    # Independent draws move about half of the people to the other arm.
    assert abs(moved / len(USERS) - 0.5) <= 0.05
    assert arm_assign(split=first, user="u", rater_id="r", session_id="s").unit == "user"
    assert arm_assign(split=first, rater_id="r", session_id="s").unit == "rater"
    assert arm_assign(split=first, session_id="s").unit == "session"
    assert arm_assign(split=first, user="same") == arm_assign(split=first, user="same")


def test_a_request_that_names_nobody_is_assigned_at_random_and_says_so(client, secret_key, split):
    draws = [arm_assign(split=split) for _ in range(400)]
    assert {draw.unit for draw in draws} == {"random"}
    assert {draw.arm for draw in draws} == {"control", "candidate"}

    completion, interaction = ask(client, secret_key)

    assert interaction.experiment_id == EXPERIMENT
    assert interaction.assignment_unit == "random"
    assert interaction.experiment_arm in {"control", "candidate"}
    assert completion["flywheel"]["experiment"] == {
        "id": EXPERIMENT,
        "arm": interaction.experiment_arm,
        "assignment_unit": "random",
    }


def test_the_same_person_is_served_by_the_same_arm_on_every_request(
    client, secret_key, served_project, split, candidate_model, candidate_index
):
    control_user = person_in(split, ExperimentArm.CONTROL)
    candidate_user = person_in(split, ExperimentArm.CANDIDATE)

    control = [ask(client, secret_key, user=control_user)[1] for _ in range(2)]
    candidate = [ask(client, secret_key, user=candidate_user)[1] for _ in range(2)]

    for interaction in control:
        assert (interaction.experiment_id, interaction.experiment_arm) == (EXPERIMENT, "control")
        assert interaction.assignment_unit == "user"
        assert served_by_production(interaction, served_project)
    for interaction in candidate:
        assert (interaction.experiment_id, interaction.experiment_arm) == (
            EXPERIMENT,
            "candidate",
        )
        assert interaction.model_version == candidate_model
        assert interaction.index_version == candidate_index
        assert {entry["index_version_id"] for entry in interaction.retrieved} == {
            candidate_index.pk
        }


def test_without_a_user_the_rater_id_then_the_session_keeps_the_arm(client, secret_key, split):
    rater = person_in(split, ExperimentArm.CANDIDATE, unit="rater")
    session = person_in(split, ExperimentArm.CANDIDATE, unit="session")

    by_rater = [ask(client, secret_key, rater_id=rater)[1] for _ in range(2)]
    by_session = ask(client, secret_key, session_id=session)[1]

    assert {(i.experiment_arm, i.assignment_unit) for i in by_rater} == {("candidate", "rater")}
    assert (by_session.experiment_arm, by_session.assignment_unit) == ("candidate", "session")
    assert by_session.session_id == session


def test_naming_a_model_bypasses_the_experiment(
    client, secret_key, served_project, split, candidate_model, candidate_index
):
    candidate_user = person_in(split, ExperimentArm.CANDIDATE)
    control_user = person_in(split, ExperimentArm.CONTROL)
    production = model_version_production_ensure(project=served_project)

    _, by_name = ask(client, secret_key, model=production.name, user=candidate_user)
    _, candidate_arm = ask(client, secret_key, model="flywheel:arm:candidate", user=control_user)
    completion, control_arm = ask(client, secret_key, model="flywheel:arm:control")

    assert served_by_production(by_name, served_project)
    assert (candidate_arm.model_version, candidate_arm.index_version) == (
        candidate_model,
        candidate_index,
    )
    assert served_by_production(control_arm, served_project)
    for interaction in (by_name, candidate_arm, control_arm):
        assert interaction.experiment_id is None
        assert (interaction.experiment_arm, interaction.assignment_unit) == ("", "")
    assert completion["flywheel"]["experiment"] is None


def test_closing_the_split_serves_the_next_request_from_production(
    client, secret_key, served_project, split, candidate_model
):
    candidate_user = person_in(split, ExperimentArm.CANDIDATE)
    _, before = ask(client, secret_key, user=candidate_user)
    assert before.model_version == candidate_model

    traffic_split_close(project=served_project, experiment_id=EXPERIMENT)
    traffic_split_close(project=served_project, experiment_id=EXPERIMENT)  # idempotent

    _, after = ask(client, secret_key, user=candidate_user)
    assert served_by_production(after, served_project)
    assert (after.experiment_id, after.experiment_arm) == (None, "")
    refused = client.post(
        "/v1/chat/completions",
        data=json.dumps(
            {"model": "flywheel:arm:candidate", "messages": [{"role": "user", "content": "Hi"}]}
        ),
        content_type="application/json",
        **bearer(secret_key),
    )
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "model_not_found"
    assert traffic_split_open_for(project=served_project) is None


def test_v1_models_lists_the_arms_while_the_experiment_runs(
    client, secret_key, served_project, split, candidate_model, candidate_index
):
    production = model_version_production_ensure(project=served_project)
    active = IndexVersion.objects.get(project=served_project, status=IndexVersion.Status.ACTIVE)

    running = {m["id"]: m for m in client.get("/v1/models", **bearer(secret_key)).json()["data"]}

    assert running["flywheel"]["flywheel"]["experiment_id"] == EXPERIMENT
    assert running["flywheel:arm:control"]["flywheel"] == {
        "endpoint": "/v1/chat/completions",
        "resolves_to": production.name,
        "status": "production",
        "experiment_id": EXPERIMENT,
        "arm": "control",
        "traffic_share": 0.5,
        "index_version": active.number,
    }
    assert running["flywheel:arm:candidate"]["flywheel"] == {
        "endpoint": "/v1/chat/completions",
        "resolves_to": candidate_model.name,
        "status": "candidate",
        "experiment_id": EXPERIMENT,
        "arm": "candidate",
        "traffic_share": 0.5,
        "index_version": candidate_index.number,
    }
    one = client.get("/v1/models/flywheel:arm:candidate", **bearer(secret_key))
    assert one.json() == running["flywheel:arm:candidate"]

    traffic_split_close(project=served_project, experiment_id=EXPERIMENT)
    stopped = {m["id"]: m for m in client.get("/v1/models", **bearer(secret_key)).json()["data"]}

    assert not {"flywheel:arm:control", "flywheel:arm:candidate"} & set(stopped)
    assert "experiment_id" not in stopped["flywheel"]["flywheel"]


def test_one_split_at_a_time_and_splits_that_cannot_be_served_are_refused(
    served_project, split, candidate_model, candidate_index
):
    arguments = {
        "project": served_project,
        "candidate_model_version": candidate_model,
        "candidate_index_version": None,
        "candidate_share": 0.1,
    }
    with pytest.raises(TrafficSplitConflict, match=f"Experiment {EXPERIMENT} is running"):
        traffic_split_open(experiment_id=102, **arguments)
    traffic_split_close(project=served_project, experiment_id=EXPERIMENT)
    with pytest.raises(TrafficSplitConflict, match="had a traffic split already"):
        traffic_split_open(experiment_id=EXPERIMENT, **arguments)

    active = IndexVersion.objects.get(project=served_project, status=IndexVersion.Status.ACTIVE)
    production = model_version_production_ensure(project=served_project)
    elsewhere = ModelVersion.objects.create(project=ProjectFactory(), name="other", base_model="")
    refusals = [
        ({"candidate_share": 0.0}, "strictly between 0 and 1"),
        ({"candidate_share": 1.0}, "strictly between 0 and 1"),
        ({"shadow_share": 1.5}, "shadow share"),
        ({"candidate_model_version": None}, "needs a candidate"),
        ({"candidate_model_version": production}, "production already"),
        ({"candidate_model_version": elsewhere}, "another project"),
        (
            {"candidate_model_version": None, "candidate_index_version": active},
            "only a ready version",
        ),
    ]
    for change, message in refusals:
        with pytest.raises(TrafficSplitInvalid, match=message):
            traffic_split_open(experiment_id=103, **(arguments | change))
    assert traffic_split_open(experiment_id=104, **arguments).is_open


def test_a_request_the_model_fails_inside_an_arm_is_counted_for_that_arm(
    client, secret_key, served_project, split, settings
):
    """The project's model server refuses connections, then accepts and never answers."""
    served_project.generation_backend = "openai"
    served_project.remote_model = "served-model"
    served_project.remote_base_url = f"http://127.0.0.1:{free_port()}/v1"
    served_project.save()
    settings.FLYWHEEL_REMOTE_TIMEOUT_SECONDS = 0.5
    user = person_in(split, ExperimentArm.CANDIDATE)

    def post(**extra):
        body = {"messages": [{"role": "user", "content": QUESTION}], "user": user, **extra}
        return client.post(
            "/v1/chat/completions",
            data=json.dumps(body | {"max_tokens": 4, "flywheel": {"rag": False}}),
            content_type="application/json",
            **bearer(secret_key),
        )

    assert post().status_code == 502
    streamed = post(stream=True)
    assert b"generation_failed" in b"".join(streamed.streaming_content)
    # Outside the experiment a failure is not the experiment's to count.
    assert post(model="flywheel:arm:candidate").status_code == 502
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        served_project.remote_base_url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        served_project.save()
        assert post().status_code == 502

    failures = list(ServingFailure.objects.order_by("pk"))
    assert [(f.experiment_id, f.experiment_arm, f.kind) for f in failures] == [
        (EXPERIMENT, "candidate", "generation_error"),
        (EXPERIMENT, "candidate", "generation_error"),
        (EXPERIMENT, "candidate", "timeout"),
    ]
    assert {f.project for f in failures} == {served_project}
    assert not Interaction.objects.filter(project=served_project).exists()
