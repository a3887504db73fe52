"""Shadow mode: a sampled control answer is also answered by the candidate, in a real Celery
worker, after the served response went back — the user never waits on it."""

import json
import uuid

import pytest
from django.db import connection

from config.queues import Queue
from config.settings.database import database_url_from_config
from flywheel.models import (
    ExperimentArm,
    IndexVersion,
    Interaction,
    ModelVersion,
    OutboxMessage,
    ShadowAnswer,
    TrafficSplit,
)
from flywheel.services.chat import SHADOW_ANSWER_TASK
from flywheel.services.shadow_answers import shadow_answer_generate
from flywheel.services.traffic_splits import arm_assign, shadow_sampled, traffic_split_open
from tests.conftest import bearer, index_folder, wait_for, worker_start

SHADOW_DEADLINE_SECONDS = 180
EXPERIMENT = 201


def test_the_sampled_share_of_control_interactions_follows_the_shadow_share():
    split = TrafficSplit(experiment_id=EXPERIMENT, candidate_share=0.5, shadow_share=0.2)
    ids = [uuid.uuid4() for _ in range(2000)]

    sampled = [shadow_sampled(split=split, interaction_id=i) for i in ids]

    assert abs(sum(sampled) / len(ids) - 0.2) <= 0.03
    assert [shadow_sampled(split=split, interaction_id=i) for i in ids] == sampled
    split.shadow_share = 0.0
    assert not any(shadow_sampled(split=split, interaction_id=i) for i in ids)


def _user_in(split: TrafficSplit, arm: str) -> str:
    return next(
        f"user-{n}" for n in range(1000) if arm_assign(split=split, user=f"user-{n}").arm == arm
    )


def _ask(client, key: str, user: str) -> Interaction:
    response = client.post(
        "/v1/chat/completions",
        data=json.dumps(
            {"messages": [{"role": "user", "content": "How soon are refunds paid?"}]}
            | {"max_tokens": 4, "user": user}
        ),
        content_type="application/json",
        **bearer(key),
    )
    assert response.status_code == 200, response.content
    return Interaction.objects.get(pk=response.json()["flywheel"]["interaction_id"])


@pytest.mark.django_db(transaction=True)
def test_a_worker_answers_a_sampled_control_question_with_the_candidate_after_the_response(
    client, project, secret_key, tmp_path
):
    folder = tmp_path / "knowledge"
    folder.mkdir()
    (folder / "refunds.md").write_text("# Refunds\n\nRefunds are paid within 14 days.\n")
    index_folder(project, folder)
    candidate = ModelVersion.objects.create(project=project, name="lora-shadow", base_model="")
    split = traffic_split_open(
        project=project,
        experiment_id=EXPERIMENT,
        candidate_model_version=candidate,
        candidate_index_version=None,
        candidate_share=0.5,
        shadow_share=1.0,
    )

    # No worker runs yet: the served answers come back all the same.
    control = _ask(client, secret_key, _user_in(split, ExperimentArm.CONTROL))
    served_by_candidate = _ask(client, secret_key, _user_in(split, ExperimentArm.CANDIDATE))

    assert control.experiment_arm == "control" and control.response
    assert not ShadowAnswer.objects.exists()
    messages = OutboxMessage.objects.filter(task_name=SHADOW_ANSWER_TASK)
    assert [message.args for message in messages] == [[str(control.pk)]]
    assert served_by_candidate.experiment_arm == "candidate"

    worker = worker_start(
        database_url=database_url_from_config(connection.settings_dict),
        log_path=tmp_path / "worker.log",
        queues=[Queue.DEFAULT.value],
    )
    try:
        shadow = wait_for(
            lambda: ShadowAnswer.objects.filter(interaction=control).first(),
            what="the candidate's shadow answer",
            deadline_seconds=SHADOW_DEADLINE_SECONDS,
        )
    finally:
        worker.stop()

    assert shadow.error == "", worker.log_tail()
    assert shadow.experiment_id == EXPERIMENT
    assert shadow.model_version == candidate
    assert shadow.index_version == IndexVersion.objects.get(project=project, status="active")
    assert shadow.answered_from == "generated" and shadow.response
    # Asked as the served answer was: the same passages, the same 4-token limit.
    assert [entry["chunk_id"] for entry in shadow.retrieved] == [
        entry["chunk_id"] for entry in control.retrieved
    ]
    assert 0 < shadow.completion_tokens <= 4
    assert shadow.latency_ms > 0
    # The interaction is unchanged, and a repeated task stores nothing new.
    control.refresh_from_db()
    assert control.model_version != candidate
    assert shadow_answer_generate(interaction_id=control.pk) == shadow
    assert ShadowAnswer.objects.count() == 1
