"""POST /api/v1/ratings: every rating kind, replacement with history, key scopes, Origin and
CORS checks, the Redis rate limit, idempotency keys, and the hook curation listens to."""

import json
import uuid

import pytest
from django.db import connection, transaction

from feedback.models import Rating, RatingSubmission
from feedback.services.ratings import rating_submit
from feedback.signals import feedback_recorded
from flywheel.models import Interaction, OutboxMessage
from flywheel.services import api_key_create
from flywheel.services.interactions import interactions_log_batch
from tests.conftest import bearer
from tests.factories import ProjectFactory

ALLOWED_ORIGIN = "https://app.example"


@pytest.fixture
def interaction(project):
    logged = interactions_log_batch(
        project=project,
        interactions=[{"messages": [{"role": "user", "content": "q"}], "response": "a"}],
    )
    return logged[0].id


def _rate(client, key, body, **headers):
    return client.post(
        "/api/v1/ratings",
        data=json.dumps(body, default=str),
        content_type="application/json",
        **bearer(key),
        **headers,
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields",
    [
        {"thumb": "up"},
        {"thumb": "down", "comment": "Wrong plan price."},
        {"score": 4},
        {"score": 1, "correction": "Canopy costs 9 euros.", "tags": ["pricing", "wrong"]},
        {"comment": "Only a comment."},
    ],
)
def test_every_kind_of_rating_is_stored(client, secret_key, interaction, fields):
    response = _rate(client, secret_key, {"interaction_id": interaction, "rater_id": "u1"} | fields)

    assert response.status_code == 201
    rating = Rating.objects.get()
    for name, value in fields.items():
        assert getattr(rating, name) == value
    assert rating.source == "api"
    assert response.json()["ratings"][0]["id"] == rating.pk


@pytest.mark.django_db
def test_a_new_rating_by_the_same_rater_replaces_the_old_and_history_is_kept(
    client, secret_key, interaction
):
    _rate(client, secret_key, {"interaction_id": interaction, "rater_id": "u1", "thumb": "up"})
    _rate(client, secret_key, {"interaction_id": interaction, "rater_id": "u2", "score": 5})
    _rate(
        client,
        secret_key,
        {"interaction_id": interaction, "rater_id": "u1", "thumb": "down", "correction": "Better."},
    )

    current = {rating.rater_id: rating for rating in Rating.objects.all()}
    assert set(current) == {"u1", "u2"}
    assert (current["u1"].thumb, current["u1"].correction) == ("down", "Better.")
    history = RatingSubmission.objects.filter(rating=current["u1"]).order_by("created_at", "pk")
    assert [submission.thumb for submission in history] == ["up", "down"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, param",
    [
        ({"rater_id": "u1", "thumb": "up"}, "interaction_id"),
        ({"rater_id": "u1"}, None),
        ({"rater_id": "u1", "thumb": "sideways"}, "thumb"),
        ({"rater_id": "u1", "score": 6}, "score"),
        ({"rater_id": "", "thumb": "up"}, "rater_id"),
        ({"rater_id": "u1", "thumb": "up", "tags": ["x" * 51]}, "tags.0"),
    ],
)
def test_invalid_ratings_get_400_and_nothing_is_stored(
    client, secret_key, interaction, body, param
):
    if param != "interaction_id":
        body = {"interaction_id": interaction} | body

    response = _rate(client, secret_key, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == f"ratings.0.{param}"
    assert not Rating.objects.exists()


@pytest.mark.django_db
def test_a_batch_is_all_or_nothing_and_only_for_the_keys_project(client, secret_key, interaction):
    other_project_interaction = interactions_log_batch(
        project=ProjectFactory(),
        interactions=[{"messages": [{"role": "user", "content": "q"}], "response": "a"}],
    )[0].id
    good = {"interaction_id": interaction, "rater_id": "u1", "thumb": "up"}

    foreign = _rate(
        client,
        secret_key,
        {"ratings": [good, good | {"interaction_id": other_project_interaction}]},
    )
    unknown = _rate(
        client, secret_key, {"interaction_id": uuid.uuid4(), "rater_id": "u", "thumb": "up"}
    )
    batch = _rate(client, secret_key, {"ratings": [good, good | {"rater_id": "u2"}]})

    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["error"]["code"] == "interaction_not_found"
    assert batch.status_code == 201
    assert Rating.objects.count() == 2


@pytest.mark.django_db
def test_a_public_key_rates_only_from_its_allowed_origins(client, public_key, interaction):
    body = {"interaction_id": interaction, "rater_id": "visitor", "thumb": "down"}

    allowed = _rate(client, public_key, body, HTTP_ORIGIN=ALLOWED_ORIGIN)
    foreign = _rate(client, public_key, body, HTTP_ORIGIN="https://evil.example")
    no_origin = _rate(client, public_key, body)

    assert allowed.status_code == 201
    assert allowed["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert Rating.objects.get().source == "widget"
    assert foreign.status_code == no_origin.status_code == 403
    assert foreign.json()["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in foreign


@pytest.mark.django_db
def test_cors_preflight_is_answered_only_for_allowed_origins(client, public_key):
    def preflight(origin):
        return client.options(
            "/api/v1/ratings",
            HTTP_ORIGIN=origin,
            HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
            HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
        )

    allowed, refused = preflight(ALLOWED_ORIGIN), preflight("https://evil.example")

    assert allowed.status_code == 204
    assert allowed["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "authorization" in allowed["Access-Control-Allow-Headers"].lower()
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused


@pytest.mark.django_db
def test_a_revoked_public_key_no_longer_opens_cors(client, project, interaction):
    from flywheel.services import api_key_revoke

    created = api_key_create(
        project=project, kind="public", name="old", allowed_origins=["https://old.example"]
    )
    api_key_revoke(api_key=created.api_key)

    response = client.options(
        "/api/v1/ratings",
        HTTP_ORIGIN="https://old.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )

    assert response.status_code == 403


@pytest.mark.django_db
def test_ratings_beyond_the_limit_get_429_with_retry_after(
    client, secret_key, interaction, settings
):
    settings.FLYWHEEL_RATING_RATE_LIMIT = 2
    body = {"interaction_id": interaction, "rater_id": "u1", "thumb": "up"}

    statuses = [_rate(client, secret_key, body).status_code for _ in range(2)]
    limited = _rate(client, secret_key, body)
    other_address = _rate(client, secret_key, body, REMOTE_ADDR="10.1.2.3")

    assert statuses == [201, 201]
    assert limited.status_code == 429
    assert 1 <= int(limited["Retry-After"]) <= settings.FLYWHEEL_RATING_RATE_WINDOW_SECONDS
    assert limited.json()["error"]["code"] == "rate_limited"
    assert other_address.status_code == 201, "the limit is per key and client address"
    assert RatingSubmission.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_rating_and_its_curation_task_are_committed_together_or_not_at_all(
    client, secret_key, interaction
):
    seen = []

    def receiver(sender, interaction_id, kind, **kwargs):
        seen.append((interaction_id, kind, connection.in_atomic_block))

    feedback_recorded.connect(receiver)
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            rating_submit(
                interaction=Interaction.objects.get(pk=interaction),
                rater_id="u",
                source="api",
                score=2,
            )
            raise RuntimeError("what failed after the rating undoes it")
        response = _rate(
            client, secret_key, {"interaction_id": interaction, "rater_id": "u", "score": 2}
        )
    finally:
        feedback_recorded.disconnect(receiver)

    assert response.status_code == 201
    assert seen == [(interaction, "rating", True)] * 2, "sent inside the rating's transaction"
    assert Rating.objects.count() == 1
    assert list(OutboxMessage.objects.values_list("task_name", "args")) == [
        ("retrain.tasks.curation.interaction_curate", [str(interaction)])
    ]


def _rate_once(client, key, body, idempotency_key):
    return _rate(client, key, body, HTTP_IDEMPOTENCY_KEY=idempotency_key)


@pytest.mark.django_db
def test_the_same_ratings_under_an_idempotency_key_are_stored_once(client, secret_key, interaction):
    body = {"ratings": [{"interaction_id": interaction, "rater_id": "u1", "thumb": "up"}]}
    first = _rate_once(client, secret_key, body, "rating-1")
    reordered = {"ratings": [dict(reversed(list(body["ratings"][0].items())))]}
    retried = _rate_once(client, secret_key, reordered, "rating-1")

    assert first.status_code == retried.status_code == 201
    assert retried.json() == first.json()
    assert RatingSubmission.objects.count() == 1, "the retry stored nothing new"
    assert OutboxMessage.objects.count() == 1, "nor queued curation again"


@pytest.mark.django_db
def test_other_ratings_under_a_used_idempotency_key_get_409_naming_the_key(
    client, secret_key, interaction
):
    _rate_once(
        client,
        secret_key,
        {"interaction_id": interaction, "rater_id": "u1", "thumb": "up"},
        "rating-1",
    )

    conflict = _rate_once(
        client,
        secret_key,
        {"interaction_id": interaction, "rater_id": "u1", "thumb": "down"},
        "rating-1",
    )
    too_long = _rate_once(
        client,
        secret_key,
        {"interaction_id": interaction, "rater_id": "u1", "thumb": "down"},
        "k" * 201,
    )

    assert conflict.status_code == 409
    error = conflict.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "conflict_error",
        "idempotency_conflict",
        "Idempotency-Key",
    )
    assert "rating-1" in error["message"]
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "invalid_idempotency_key"
    assert Rating.objects.get().thumb == "up"
    assert RatingSubmission.objects.count() == 1


@pytest.mark.django_db
def test_an_idempotency_key_is_the_projects_own(client, secret_key, interaction):
    other_project = ProjectFactory()
    other_key = api_key_create(project=other_project, kind="secret", name="other").raw_key
    theirs = interactions_log_batch(
        project=other_project,
        interactions=[{"messages": [{"role": "user", "content": "q"}], "response": "a"}],
    )[0].id

    mine = _rate_once(
        client, secret_key, {"interaction_id": interaction, "rater_id": "u", "score": 5}, "k"
    )
    other = _rate_once(
        client, other_key, {"interaction_id": theirs, "rater_id": "u", "score": 1}, "k"
    )

    assert mine.status_code == other.status_code == 201
    assert RatingSubmission.objects.count() == 2
