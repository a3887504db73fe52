"""Log-only ingestion for apps that bring their own LLM, and reading interactions back."""

import json
import threading
import uuid

import pydantic
import pytest
from django.db import connection, connections, transaction

from flywheel.api.schemas import InteractionBatchIn, interaction_batch_from_json
from flywheel.models import Interaction
from flywheel.services import api_key_create
from flywheel.services.idempotency import IdempotencyConflict, request_fingerprint
from flywheel.services.interactions import interactions_log_batch
from flywheel.validation import json_loads_checked
from tests.conftest import bearer, wait_for
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


# ---------------------------------------------------------------------------------------------
# The write path at COPY speed: a batch validated straight from its JSON, copied into a staging
# table and moved by one INSERT … SELECT … ON CONFLICT DO NOTHING.


def _batch_body(interactions: list[dict], **json_options) -> bytes:
    return json.dumps({"interactions": interactions}, **json_options).encode()


def _one(**fields) -> bytes:
    """A batch of one interaction with these fields."""
    return _batch_body([_interaction(1, **fields)])


HOSTILE = "__hostile__"


def _one_raw(raw_json: str, **fields) -> bytes:
    """A batch of one interaction whose HOSTILE value is replaced by raw JSON (NaN, say)."""
    return _one(**fields).replace(json.dumps(HOSTILE).encode(), raw_json.encode())


def _nested_lists(levels: int) -> list:
    value: list = [1]
    for _ in range(levels - 1):
        value = [value]
    return value


# Bodies the fast path must either leave to the ordinary parser and schema or read exactly as
# they do.
EDGE_BODIES = {
    "nul in a message": _one(response="a\x00b"),
    "an escaped backslash before u0000": _one(response="\\u0000"),
    "lone surrogate": _one_raw('"\\ud800"', response=HOSTILE),
    "surrogate pair": _one(response="thumbs 👍 up"),
    "raw utf-8": _batch_body([_interaction(1, response="naïve ☃ 👍")], ensure_ascii=False),
    "nan in metadata": _one_raw("NaN", metadata={"x": HOSTILE}),
    "infinity as a score": _one_raw("-Infinity", retrieved=[{"score": HOSTILE}]),
    "1e400 as a score": _one_raw("1e400", retrieved=[{"score": HOSTILE}]),
    "integer beyond float64 in metadata": _one_raw("1" + "0" * 400, metadata={"x": HOSTILE}),
    "integer beyond int64 in metadata": _one(metadata={"x": 2**70}),
    "metadata too deep": _one(metadata={"x": _nested_lists(11)}),
    "unknown field": _one(note="kept out"),
    "unknown field holding nan": _one_raw("NaN", note=HOSTILE),
    "unknown field nested 40 deep": _one(note=_nested_lists(40)),
    "unknown field in a message": _one(messages=[{"role": "user", "content": "Q?", "name": "x"}]),
    "unknown top-level field": json.dumps({"interactions": [_interaction(1)], "x": 1}).encode(),
    "one interaction on its own": json.dumps(_interaction(1)).encode(),
    "latency as a string": _one(latency_ms="420"),
    "latency as true": _one(latency_ms=True),
    "latency with a fraction": _one(latency_ms=4.5),
    "created_at as a unix time": _one(created_at=1_700_000_000),
    "created_at before 2000": _one(created_at="1999-12-31T23:59:59Z"),
    "a key named twice in an object": (
        b'{"interactions": [{"messages": [{"role": "user", "content": "Q?"}], '
        b'"response": "a", "response": "b"}]}'
    ),
    "byte order mark": b"\xef\xbb\xbf" + _one(),
    "trailing text": _one() + b" x",
    "invalid utf-8": _one(response=HOSTILE).replace(json.dumps(HOSTILE).encode(), b'"\xff"'),
    "tab inside a string": _one(response=HOSTILE).replace(HOSTILE.encode(), b"a\tb"),
}


def _read_the_ordinary_way(body: bytes):
    try:
        return InteractionBatchIn.model_validate(json_loads_checked(body))
    except (ValueError, pydantic.ValidationError):
        return None


@pytest.mark.parametrize("body", EDGE_BODIES.values(), ids=EDGE_BODIES.keys())
def test_the_fast_path_reads_a_batch_as_the_parser_and_schema_do_or_leaves_it_to_them(body):
    fast = interaction_batch_from_json(body)
    ordinary = _read_the_ordinary_way(body)

    if fast is not None:
        assert ordinary is not None
        assert fast.model_dump() == ordinary.model_dump()


def test_a_batch_of_known_fields_with_storable_values_takes_the_fast_path():
    body = _batch_body([_interaction(n, created_at="2026-01-02T03:04:05Z") for n in range(3)])

    fast = interaction_batch_from_json(body)

    assert fast is not None
    assert fast.model_dump() == _read_the_ordinary_way(body).model_dump()
    assert interaction_batch_from_json(EDGE_BODIES["surrogate pair"]) is not None
    assert interaction_batch_from_json(EDGE_BODIES["raw utf-8"]) is not None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, status, param",
    [
        (EDGE_BODIES["unknown field"], 201, None),
        (EDGE_BODIES["unknown field holding nan"], 400, "interactions.0.note"),
        # The path's 33rd level: interactions, 0, note and 30 lists.
        (EDGE_BODIES["unknown field nested 40 deep"], 400, "interactions.0.note" + ".0" * 30),
        (EDGE_BODIES["an escaped backslash before u0000"], 201, None),
        (EDGE_BODIES["nul in a message"], 400, "interactions.0.response"),
        (EDGE_BODIES["a key named twice in an object"], 201, None),
    ],
)
def test_bodies_the_fast_path_leaves_are_answered_as_before(
    client, secret_key, body, status, param
):
    response = client.post(
        "/api/v1/interactions", data=body, content_type="application/json", **bearer(secret_key)
    )

    assert response.status_code == status, response.content
    if status != 201:
        assert response.json()["error"]["param"] == param
        assert not Interaction.objects.exists()


@pytest.mark.django_db
def test_a_thousand_interactions_are_stored_as_sent_and_a_resend_is_matched_by_key(
    client, secret_key
):
    sent = [
        _interaction(
            n,
            idempotency_key=f"app-{n}" if n % 10 else None,
            created_at=f"2026-01-{n % 28 + 1:02d}T12:00:00Z",
            metadata={"n": n, "tags": ["a", "ü"]},
        )
        for n in range(1000)
    ]

    first = _log(client, secret_key, sent)
    resent = _log(client, secret_key, sent[:500] + [_interaction(n) for n in range(1000, 1500)])

    assert first.status_code == resent.status_code == 201, resent.content
    logged = first.json()["interactions"]
    assert [item["idempotency_key"] for item in logged] == [i["idempotency_key"] for i in sent]
    assert all(item["created"] for item in logged)
    again = resent.json()["interactions"]
    keyed = [n for n in range(500) if n % 10]
    assert [again[n]["id"] for n in keyed] == [logged[n]["id"] for n in keyed]
    assert [again[n]["created"] for n in range(500)] == [not n % 10 for n in range(500)]
    assert all(item["created"] for item in again[500:])
    assert Interaction.objects.count() == 1000 + 50 + 500
    stored = Interaction.objects.get(id=logged[737]["id"])
    assert (stored.idempotency_key, stored.query_text, stored.response) == (
        "app-737",
        "Question 737?",
        "Answer 737.",
    )
    assert stored.messages == sent[737]["messages"]
    assert stored.metadata == {"n": 737, "tags": ["a", "ü"]}
    assert stored.retrieved[0] == {
        "text": "passage",
        "title": "",
        "source_uri": "kb/a.md",
        "document_id": None,
        "chunk_id": None,
        "score": 0.8,
        "rank": 1,
    }
    assert stored.created_at.isoformat() == "2026-01-10T12:00:00+00:00"
    assert (stored.source, stored.model_name, stored.answered_from) == ("log", "gpt-app", "")
    assert stored.request_hash and stored.model_version_id is None


@pytest.mark.django_db
def test_one_hostile_interaction_in_a_thousand_refuses_the_batch_by_its_index(client, secret_key):
    batch = [_interaction(n) for n in range(1000)]
    batch[537] = _interaction(537, response="before\x00after")
    # A hundred new interactions, then 900 stored ones of which one is changed.
    changed = [_interaction(n) for n in [*range(1000, 1100), *range(100, 1000)]]
    changed[612] = _interaction(612, response="Another answer.")

    hostile = _log(client, secret_key, batch)
    stored = _log(client, secret_key, [_interaction(n) for n in range(1000)])
    conflicting = _log(client, secret_key, changed)

    assert hostile.status_code == 400
    assert hostile.json()["error"]["param"] == "interactions.537.response"
    assert stored.status_code == 201
    assert conflicting.status_code == 409
    assert conflicting.json()["error"]["param"] == "interactions.612.idempotency_key"
    assert Interaction.objects.count() == 1000, "nothing of a refused batch is stored"


def test_the_request_body_stays_documented(client):
    operation = client.get("/api/openapi.json").json()["paths"]["/api/v1/interactions"]["post"]

    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/InteractionBatchIn"}
    assert operation["requestBody"]["required"] is True


# ---------------------------------------------------------------------------------------------
# Concurrent batches: the unique constraint decides, and the loser reads the winner's id.


def _backend_pid() -> int:
    connection.ensure_connection()
    return connection.connection.info.backend_pid


def _waits_on_a_lock(pid: int) -> bool:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return bool(row) and row[0] == "Lock"


def _log_in_thread(project, interactions, outcome: dict):
    try:
        outcome["pid"] = _backend_pid()
        outcome["logged"] = interactions_log_batch(project=project, interactions=interactions)
    except IdempotencyConflict as conflict:
        outcome["conflict"] = conflict
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first_commits", [True, False], ids=["first commits", "first rolls back"])
@pytest.mark.parametrize("same_fields", [True, False], ids=["same fields", "other fields"])
def test_a_batch_waiting_on_another_with_the_same_key_follows_its_outcome(
    project, first_commits, same_fields
):
    """The second batch's insert of key app-2 waits on the first's uncommitted row; once the
    first commits, the second gets its id (or a conflict), and once it rolls back, the second
    stores its own."""
    outcome: dict = {}
    second_batch = [
        _interaction(2, **({} if same_fields else {"response": "Other."})),
        _interaction(3),
    ]
    second = threading.Thread(target=_log_in_thread, args=(project, second_batch, outcome))

    with transaction.atomic():
        first = interactions_log_batch(
            project=project, interactions=[_interaction(1), _interaction(2)]
        )
        second.start()
        wait_for(
            lambda: "pid" in outcome and _waits_on_a_lock(outcome["pid"]),
            what="the second batch waiting on the first's key",
            deadline_seconds=30,
        )
        transaction.set_rollback(not first_commits)
    second.join(timeout=30)

    stored = dict(Interaction.objects.values_list("idempotency_key", "id"))
    if not first_commits:
        assert [item.created for item in outcome["logged"]] == [True, True]
        assert stored == {"app-2": outcome["logged"][0].id, "app-3": outcome["logged"][1].id}
    elif same_fields:
        assert (outcome["logged"][0].id, outcome["logged"][0].created) == (first[1].id, False)
        assert outcome["logged"][1].created is True
        assert set(stored) == {"app-1", "app-2", "app-3"}
    else:
        assert (outcome["conflict"].key, outcome["conflict"].index) == ("app-2", 0)
        assert stored == {"app-1": first[0].id, "app-2": first[1].id}, (
            "nothing of the conflicting batch is stored"
        )


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_with_the_same_keys_store_each_interaction_once(project):
    clients = 4
    batch = [_interaction(n) for n in range(200)]
    start_together = threading.Barrier(clients)
    results: list[list] = []

    def log_the_batch():
        try:
            start_together.wait(timeout=30)
            results.append(interactions_log_batch(project=project, interactions=batch))
        finally:
            connection.close()

    threads = [threading.Thread(target=log_the_batch) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(results) == clients
    assert Interaction.objects.count() == 200
    for n in range(200):
        assert len({logged[n].id for logged in results}) == 1
        assert sum(logged[n].created for logged in results) == 1


@pytest.mark.django_db
def test_an_interaction_stored_by_an_earlier_version_is_recognised_by_its_key(
    client, secret_key, project
):
    """Its request hash was request_fingerprint of the validated fields: a resend matches it."""
    sent = _interaction(
        1,
        response="Déjà vu ✓",
        created_at="2026-01-02T03:04:05+01:00",
        metadata={"b": 1.5, "a": [None, True, "ü"]},
    )
    [validated] = InteractionBatchIn.model_validate({"interactions": [sent]}).interactions
    assert validated.created_at is not None
    fields = validated.model_dump()
    earlier = Interaction.objects.create(
        project=project,
        source=Interaction.Source.LOG,
        idempotency_key="app-1",
        request_hash=request_fingerprint(
            {name: value for name, value in fields.items() if name != "idempotency_key"}
        ),
        messages=sent["messages"],
        response=sent["response"],
        created_at=validated.created_at,
    )

    resent = _log(client, secret_key, [sent])
    changed = _log(client, secret_key, [_interaction(1, response="Déjà vu")])

    assert resent.status_code == 201
    assert resent.json()["interactions"] == [
        {"id": str(earlier.id), "idempotency_key": "app-1", "created": False}
    ]
    assert changed.status_code == 409
