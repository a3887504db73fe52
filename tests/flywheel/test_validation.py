"""Every write refuses what PostgreSQL or a reader could not take — NUL characters, lone
surrogates, NaN and the infinities, numbers beyond float64 or their column, timestamps outside
the sane window, metadata too deep or too large, oversize text — with a 400 that names the
field and stores nothing; and every read renders whatever rows the database already holds."""

import importlib
import json
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from feedback.models import Rating
from flywheel.models import ApiKey, Document, Interaction
from flywheel.services import api_key_create
from flywheel.services.interactions import interactions_log_batch
from flywheel.validation import METADATA_MAX_BYTES, METADATA_MAX_DEPTH
from retrain.jobs.lifecycle import InvalidJobParameters, job_create
from retrain.models import Job
from tests.conftest import bearer, user_with_role

# A placeholder in a body, replaced by a raw JSON token after dumping: NaN and Infinity are
# not values json.dumps writes on its own.
BAD = "__bad_value__"


def _nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels - 1):
        value = {"level": value}
    return value


# (name, the raw JSON put in place of BAD)
STRING_VALUES = [
    ("nul", json.dumps("before\x00after")),
    ("lone high surrogate", '"before\\ud800after"'),
    ("lone low surrogate", '"before\\udfffafter"'),
]
NUMBER_VALUES = [
    ("nan", "NaN"),
    ("infinity", "Infinity"),
    ("minus infinity", "-Infinity"),
    ("beyond float64", "1e400"),
    ("integer beyond float64", "1" + "0" * 5000),
]
METADATA_VALUES = [
    *STRING_VALUES,
    *NUMBER_VALUES,
    ("key with nul", json.dumps({"key\x00": 1})),
    ("key with lone surrogate", '{"key\\ud800": 1}'),
    ("too deep", json.dumps({"nested": _nested(METADATA_MAX_DEPTH)})),
    ("too large", json.dumps({"text": "x" * METADATA_MAX_BYTES})),
]


def _interaction_body(**fields) -> dict:
    return {
        "interactions": [
            {"messages": [{"role": "user", "content": "Question?"}], "response": "Answer."} | fields
        ]
    }


def _chat_body(**fields) -> dict:
    return {"messages": [{"role": "user", "content": "Question?"}], "max_tokens": 1} | fields


def _document_body(**fields) -> dict:
    return {"documents": [{"title": "T", "source_uri": "kb/t.md", "content": "Text."} | fields]}


def _rating_body(interaction_id: str, **fields) -> dict:
    return {
        "ratings": [{"interaction_id": interaction_id, "rater_id": "r", "thumb": "up"} | fields]
    }


def _job_body(**parameters) -> dict:
    return {"kind": "index_refresh", "parameters": parameters}


# (endpoint, body with BAD somewhere, the param the error names, the values tried there)
CASES = [
    (
        "/api/v1/interactions",
        _interaction_body(response=BAD),
        "interactions.0.response",
        STRING_VALUES,
    ),
    (
        "/api/v1/interactions",
        _interaction_body(messages=[{"role": "user", "content": BAD}]),
        "interactions.0.messages.0.content",
        STRING_VALUES,
    ),
    (
        "/api/v1/interactions",
        _interaction_body(metadata={"channel": BAD}),
        "interactions.0.metadata.channel",
        [*STRING_VALUES, *NUMBER_VALUES],
    ),
    (
        "/api/v1/interactions",
        _interaction_body(metadata=BAD),
        "interactions.0.metadata",
        [name_value for name_value in METADATA_VALUES if name_value[0].startswith(("key", "too"))],
    ),
    (
        "/api/v1/interactions",
        _interaction_body(retrieved=[{"text": "passage", "score": BAD}]),
        "interactions.0.retrieved.0.score",
        NUMBER_VALUES,
    ),
    (
        "/api/v1/interactions",
        _interaction_body(prompt_tokens=BAD),
        "interactions.0.prompt_tokens",
        [*NUMBER_VALUES, ("beyond int4", "2147483648"), ("negative", "-1")],
    ),
    (
        "/api/v1/interactions",
        _interaction_body(latency_ms=BAD),
        "interactions.0.latency_ms",
        [*NUMBER_VALUES, ("beyond int4", "99999999999")],
    ),
    (
        "/api/v1/interactions",
        _interaction_body(created_at=BAD),
        "interactions.0.created_at",
        [
            ("before 2000", '"1999-12-31T23:59:59Z"'),
            ("year one east of utc", '"0001-01-01T00:00:00+05:00"'),
            ("past year 9999 in utc", '"9999-12-31T23:00:00-23:00"'),
            ("two days ahead", json.dumps((timezone.now() + timedelta(days=2)).isoformat())),
        ],
    ),
    (
        "/api/v1/interactions",
        _interaction_body(session_id=BAD),
        "interactions.0.session_id",
        [*STRING_VALUES, ("oversize", json.dumps("s" * 201))],
    ),
    (
        "/v1/chat/completions",
        _chat_body(messages=[{"role": "user", "content": BAD}]),
        "messages.0.content",
        [*STRING_VALUES, ("oversize", json.dumps("q" * 200_001))],
    ),
    (
        "/v1/chat/completions",
        _chat_body(temperature=BAD),
        "temperature",
        NUMBER_VALUES,
    ),
    (
        "/v1/chat/completions",
        _chat_body(max_tokens=BAD),
        "max_tokens",
        [*NUMBER_VALUES, ("beyond its bound", "2147483648")],
    ),
    (
        "/v1/chat/completions",
        _chat_body(flywheel={"metadata": BAD}),
        "flywheel.metadata",
        [name_value for name_value in METADATA_VALUES if name_value[0].startswith(("key", "too"))],
    ),
    (
        "/v1/chat/completions",
        _chat_body(flywheel={"metadata": {"tenant": BAD}}),
        "flywheel.metadata.tenant",
        [*STRING_VALUES, *NUMBER_VALUES],
    ),
    (
        "/api/v1/documents",
        _document_body(content=BAD),
        "documents.0.content",
        STRING_VALUES,
    ),
    (
        "/api/v1/documents",
        _document_body(metadata=BAD),
        "documents.0.metadata",
        [name_value for name_value in METADATA_VALUES if name_value[0].startswith(("key", "too"))],
    ),
    (
        "/api/v1/documents",
        _document_body(title=BAD),
        "documents.0.title",
        [*STRING_VALUES, ("oversize", json.dumps("t" * 501))],
    ),
    (
        "/api/v1/jobs",
        _job_body(golden_set=BAD),
        "parameters.golden_set",
        [*STRING_VALUES, *NUMBER_VALUES],
    ),
    (
        "/api/v1/jobs",
        {"kind": BAD, "parameters": {}},
        "kind",
        [*STRING_VALUES, ("unknown kind", '"mining"')],
    ),
    (
        "/api/v1/jobs",
        {"kind": "index_refresh", "parameters": BAD},
        "parameters",
        [name_value for name_value in METADATA_VALUES if name_value[0].startswith(("key", "too"))],
    ),
    (
        "/v1/embeddings",
        {"model": "flywheel:embedding", "input": BAD},
        "input",
        [*STRING_VALUES, *NUMBER_VALUES],
    ),
    (
        "/v1/embeddings",
        {"model": "flywheel:embedding", "input": ["fine", BAD]},
        "input.1",
        STRING_VALUES,
    ),
]
RATING_CASES = [
    ("ratings.0.comment", "comment", STRING_VALUES),
    ("ratings.0.tags.0", "tags", [(name, f"[{raw}]") for name, raw in STRING_VALUES]),
    ("ratings.0.score", "score", [*NUMBER_VALUES, ("beyond int4", "2147483648")]),
]


def _raw_body(body: dict, raw_value: str) -> str:
    text = json.dumps(body)
    assert text.count(json.dumps(BAD)) == 1
    return text.replace(json.dumps(BAD), raw_value)


def _stored_counts() -> dict:
    return {model.__name__: model.objects.count() for model in (Interaction, Document, Job, Rating)}


def _case_ids():
    for endpoint, body, param, values in CASES:
        for name, raw in values:
            yield pytest.param(endpoint, body, param, raw, id=f"{param}={name}")


@pytest.fixture
def all_scopes_key(project) -> str:
    return api_key_create(
        project=project, kind="secret", name="everything", scopes=ApiKey.Scope.values
    ).raw_key


def _post(client, key, endpoint, raw_body):
    return client.post(endpoint, data=raw_body, content_type="application/json", **bearer(key))


def _assert_refused(response, param):
    assert response.status_code == 400, response.content[:500]
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert error["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(("endpoint", "body", "param", "raw"), list(_case_ids()))
def test_a_bad_value_is_a_400_naming_the_field_and_nothing_is_stored(
    client, all_scopes_key, endpoint, body, param, raw
):
    before = _stored_counts()

    response = _post(client, all_scopes_key, endpoint, _raw_body(body, raw))

    _assert_refused(response, param)
    assert _stored_counts() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("param", "field", "raw"),
    [
        pytest.param(param, field, raw, id=f"{param}={name}")
        for param, field, values in RATING_CASES
        for name, raw in values
    ],
)
def test_a_bad_rating_value_is_a_400_naming_the_field_and_no_rating_is_stored(
    client, project, all_scopes_key, param, field, raw
):
    logged = interactions_log_batch(
        project=project,
        interactions=[{"messages": [{"role": "user", "content": "Q?"}], "response": "A."}],
    )
    body = _rating_body(str(logged[0].id), **{field: BAD})

    response = _post(client, all_scopes_key, "/api/v1/ratings", _raw_body(body, raw))

    _assert_refused(response, param)
    assert not Rating.objects.exists()


@pytest.mark.django_db
def test_a_body_that_is_not_utf8_or_nested_beyond_reason_is_a_400(client, all_scopes_key):
    not_utf8 = b'{"interactions": [{"messages": [{"role": "user", "content": "\xff"}]}]}'
    deep = '{"interactions": ' + "[" * 5000 + "]" * 5000 + "}"

    for body in (not_utf8, deep):
        response = _post(client, all_scopes_key, "/api/v1/interactions", body)
        assert response.status_code == 400, response.content[:300]
    assert not Interaction.objects.exists()


@pytest.mark.django_db
def test_a_chat_request_is_refused_in_full_before_anything_is_generated(client, all_scopes_key):
    # Valid up to its last field: were the model run first, an interaction would be logged.
    body = _chat_body(flywheel={"metadata": {"deep": _nested(METADATA_MAX_DEPTH + 1)}})

    response = _post(client, all_scopes_key, "/v1/chat/completions", json.dumps(body))

    _assert_refused(response, "flywheel.metadata")
    assert not Interaction.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "parameters",
    [{"golden_set": "a\x00b"}, {"activate": float("nan")}, {"name\ud800": 1}],
)
def test_job_parameters_from_any_door_get_the_same_checks(project, parameters):
    with pytest.raises(InvalidJobParameters):
        job_create(project=project, kind="index_refresh", trigger="command", parameters=parameters)
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_dashboard_forms_refuse_what_the_database_could_not_store(client, project):
    client.force_login(user_with_role(project, "admin"))

    asked = client.post(
        f"{reverse('widget_demo')}?project={project.slug}", {"question": "What\x00now?"}
    )
    listed = client.get(
        reverse("dashboard:verified_answers", args=[project.slug]),
        {"answer": "99999999999999999999999"},
    )

    assert asked.status_code == 200
    assert "question" in asked.context["form"].errors
    assert not Interaction.objects.exists()
    assert listed.status_code == 200
    assert "answer" in listed.context["filter_form"].errors


# ---------------------------------------------------------------------------------------------
# Reads render whatever is stored


def strict_json_loads(text: bytes | str):
    """JSON as other languages read it: NaN and Infinity are not JSON."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _store_unrenderable_rows(project) -> list[uuid.UUID]:
    """Rows no current write path lets through, written with SQL as an older version or a
    hand-edited database could have left them."""
    logged = interactions_log_batch(
        project=project,
        interactions=[
            {"messages": [{"role": "user", "content": f"Question {n}?"}], "response": "A."}
            for n in range(5)
        ],
    )
    ids = [entry.id for entry in logged]
    deep = "[" * 3000 + "]" * 3000
    updates = [
        ("created_at = 'infinity'", []),
        ("created_at = '0001-01-01 00:00:00+00'::timestamptz - interval '1 day'", []),
        ("created_at = '12000-06-01 00:00:00+00'", []),
        ("metadata = %s::jsonb", [json.dumps({"note": "deep"})[:-1] + ', "x": ' + deep + "}"]),
        (
            "metadata = %s::jsonb, messages = %s::jsonb, retrieved = %s::jsonb",
            ['{"big": 1e400, "huge": 1' + "0" * 5000 + "}", '"not a list"', "[1, 2]"],
        ),
    ]
    with connection.cursor() as cursor:
        for interaction_id, (assignment, values) in zip(ids, updates, strict=True):
            cursor.execute(
                f"UPDATE flywheel_interaction SET {assignment} WHERE id = %s",
                [*values, interaction_id],
            )
    return ids


@pytest.mark.django_db
def test_lists_details_exports_and_the_admin_render_rows_stored_before_validation(
    client, admin_client, project, all_scopes_key
):
    ids = _store_unrenderable_rows(project)
    client.force_login(user_with_role(project, "viewer"))

    listed = client.get(reverse("dashboard:interactions", args=[project.slug]))
    assert listed.status_code == 200
    assert {row.id for row in listed.context["page"].interactions} == set(ids)
    for interaction_id in ids:
        detail = client.get(
            reverse("dashboard:interaction_detail", args=[project.slug, interaction_id])
        )
        assert detail.status_code == 200
        read = client.get(f"/api/v1/interactions/{interaction_id}", **bearer(all_scopes_key))
        assert read.status_code == 200, read.content[:300]
        strict_json_loads(read.content)
        admin_page = admin_client.get(
            reverse("admin:flywheel_interaction_change", args=[interaction_id])
        )
        assert admin_page.status_code == 200

    csv_export = client.get(reverse("dashboard:interactions_export_csv", args=[project.slug]))
    assert len(b"".join(csv_export.streaming_content).splitlines()) == 1 + len(ids)
    jsonl_export = client.get(reverse("dashboard:interactions_export_jsonl", args=[project.slug]))
    lines = b"".join(jsonl_export.streaming_content).splitlines()
    assert {strict_json_loads(line)["id"] for line in lines} == {str(i) for i in ids}
    changelist = admin_client.get(reverse("admin:flywheel_interaction_changelist"))
    assert changelist.status_code == 200
    # The date hierarchy offers the year the unreadable timestamps read as.
    last_year = admin_client.get(
        reverse("admin:flywheel_interaction_changelist"), {"created_at__year": "9999"}
    )
    assert last_year.status_code in (200, 302)


@pytest.mark.django_db
def test_the_repair_migration_moves_stored_values_into_range_and_keeps_the_originals(project):
    ids = _store_unrenderable_rows(project)
    repair = importlib.import_module("flywheel.migrations.0005_repair_unrenderable_rows")

    with connection.cursor() as cursor:
        repair.created_at_clamp(cursor)
        repair.json_values_repair(cursor)
        cursor.execute(
            "SELECT id, created_at, metadata::text, messages::text FROM flywheel_interaction"
        )
        rows = {row[0]: row[1:] for row in cursor.fetchall()}

    earliest = timezone.now().replace(year=2000, month=1, day=1, hour=0, minute=0, second=0)
    for interaction_id in ids:
        created_at, metadata_text, _ = rows[interaction_id]
        assert earliest.replace(microsecond=0) <= created_at <= timezone.now() + timedelta(days=1)
        json.loads(metadata_text)
    infinite, before_christ, far_future, deep, odd = (json.loads(rows[i][1]) for i in ids)
    assert infinite["flywheel_repaired"]["created_at"] == "infinity"
    assert before_christ["flywheel_repaired"]["created_at"].endswith("BC")
    assert far_future["flywheel_repaired"]["created_at"].startswith("12000-06-01")
    assert '"note": "deep"' in deep["flywheel_repaired"]["metadata"]
    assert "1" + "0" * 5000 in odd["flywheel_repaired"]["metadata"]
