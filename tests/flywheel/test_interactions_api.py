"""Log-only ingestion for apps that bring their own LLM, and reading interactions back."""

import json
import uuid

import pytest

from flywheel.models import Interaction
from flywheel.services import api_key_create
from tests.conftest import bearer
from tests.factories import ProjectFactory


def _interaction(n: int, **overrides) -> dict:
    return {
        "idempotency_key": f"app-{n}",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Question {n}?"},
        ],
        "response": f"Answer {n}.",
        "model": "gpt-app",
        "retrieved": [{"text": "passage", "source_uri": "kb/a.md", "score": 0.8, "rank": 1}],
        "latency_ms": 420,
        "prompt_tokens": 31,
        "completion_tokens": 5,
        "session_id": "s-1",
        "end_user_id": "user-7",
        "metadata": {"channel": "web"},
    } | overrides


def _log(client, key, interactions):
    return client.post(
        "/api/v1/interactions",
        data=json.dumps({"interactions": interactions}),
        content_type="application/json",
        **bearer(key),
    )


@pytest.mark.django_db
def test_a_batch_is_stored_in_full_and_resending_it_stores_nothing_new(client, secret_key):
    first = _log(client, secret_key, [_interaction(n) for n in range(3)])
    resent = _log(client, secret_key, [_interaction(n) for n in range(4)])

    assert first.status_code == resent.status_code == 201
    first_ids = [item["id"] for item in first.json()["interactions"]]
    resent_items = resent.json()["interactions"]
    assert [item["id"] for item in resent_items[:3]] == first_ids
    assert [item["created"] for item in resent_items] == [False, False, False, True]
    assert Interaction.objects.count() == 4

    stored = client.get(f"/api/v1/interactions/{first_ids[1]}", **bearer(secret_key)).json()
    assert stored["query_text"] == "Question 1?"
    assert stored["response"] == "Answer 1."
    assert stored["model_name"] == "gpt-app"
    assert stored["retrieved"][0]["source_uri"] == "kb/a.md"
    assert (stored["latency_ms"], stored["prompt_tokens"], stored["end_user_id"]) == (
        420,
        31,
        "user-7",
    )
    assert stored["source"] == "log"


@pytest.mark.django_db
def test_a_key_repeated_inside_one_batch_refuses_the_batch(client, secret_key):
    response = _log(client, secret_key, [_interaction(1), _interaction(2), _interaction(1)])

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "duplicate_idempotency_key"
    assert error["param"] == "interactions.2.idempotency_key"
    assert "app-1" in error["message"]
    assert not Interaction.objects.exists()


@pytest.mark.django_db
def test_a_stored_key_sent_with_other_fields_is_a_conflict_and_stores_nothing(client, secret_key):
    first = _log(client, secret_key, [_interaction(1)]).json()["interactions"][0]

    changed = _log(
        client, secret_key, [_interaction(2), _interaction(1, response="Another answer.")]
    )
    same_fields_in_another_order = _log(
        client, secret_key, [dict(reversed(list(_interaction(1).items())))]
    )

    assert changed.status_code == 409
    error = changed.json()["error"]
    assert (error["type"], error["code"]) == ("conflict_error", "idempotency_conflict")
    assert error["param"] == "interactions.1.idempotency_key"
    assert "app-1" in error["message"]
    assert same_fields_in_another_order.status_code == 201
    assert same_fields_in_another_order.json()["interactions"] == [first | {"created": False}]
    assert list(Interaction.objects.values_list("idempotency_key", "response")) == [
        ("app-1", "Answer 1.")
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "bad, param",
    [
        (_interaction(9, messages=[]), "interactions.1.messages"),
        (_interaction(9, messages=[{"role": "assistant", "content": "x"}]), "interactions.1"),
        (_interaction(9, latency_ms="slow"), "interactions.1.latency_ms"),
        (
            _interaction(9, messages=[{"role": "wizard", "content": "x"}]),
            "interactions.1.messages.0.role",
        ),
        (_interaction(9, response=None), "interactions.1.response"),
    ],
)
def test_one_bad_interaction_refuses_the_whole_batch(client, secret_key, bad, param):
    response = _log(client, secret_key, [_interaction(1), bad])

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert not Interaction.objects.exists()


@pytest.mark.django_db
def test_one_interaction_on_its_own_is_logged_like_a_batch_of_one(client, secret_key):
    def post(body: dict):
        return client.post(
            "/api/v1/interactions",
            data=json.dumps(body),
            content_type="application/json",
            **bearer(secret_key),
        )

    single = post(_interaction(1))
    again = post(_interaction(1))
    bad = post(_interaction(2, latency_ms="slow"))

    assert single.status_code == again.status_code == 201
    [logged] = single.json()["interactions"]
    assert logged["created"] is True and logged["idempotency_key"] == "app-1"
    assert again.json()["interactions"][0] == {**logged, "created": False}
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "interactions.0.latency_ms"
    assert Interaction.objects.get().response == "Answer 1."


@pytest.mark.django_db
def test_batches_hold_one_to_a_thousand_interactions(client, secret_key):
    assert _log(client, secret_key, []).status_code == 400
    too_many = [_interaction(n) for n in range(1001)]
    assert _log(client, secret_key, too_many).status_code == 400
    assert _log(client, secret_key, too_many[:1000]).status_code == 201
    assert Interaction.objects.count() == 1000


@pytest.mark.django_db
def test_projects_never_see_each_others_interactions(client, secret_key):
    other_key = api_key_create(project=ProjectFactory(), kind="secret", name="other").raw_key
    mine = _log(client, secret_key, [_interaction(1)]).json()["interactions"][0]["id"]
    theirs = _log(client, other_key, [_interaction(1)]).json()["interactions"][0]

    assert theirs["created"] is True, "the same idempotency key in another project is new"
    assert client.get(f"/api/v1/interactions/{mine}", **bearer(other_key)).status_code == 404
    assert (
        client.get(f"/api/v1/interactions/{uuid.uuid4()}", **bearer(secret_key)).status_code == 404
    )
    assert client.get("/api/v1/interactions/not-a-uuid", **bearer(secret_key)).status_code == 400
