"""Reviews can be amended: by their reviewer, a project admin or a secret key with the
`datasets` scope, from the interaction page or the API. Every revision is kept; the verified
answer follows the revision; curation runs again and the next dataset version holds the
revised example in place of the old one."""

import importlib
import json

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from feedback.models import Review, ReviewRevision
from feedback.services.ratings import rating_submit
from feedback.services.reviews import (
    ReviewReviser,
    ReviewRevisionForbidden,
    ReviewRevisionInvalid,
    ReviewRevisionUnchanged,
    ReviewSuperseded,
    review_revise,
    review_submit,
)
from flywheel.models import IndexVersion, VerifiedAnswer
from flywheel.services import api_key_create
from flywheel.services.api_keys import api_key_revoke
from retrain.curation.pipeline import interactions_needing_curation
from retrain.datasets.snapshot import dataset_snapshot
from retrain.jobs.schedules import index_refresh_due
from retrain.models import DatasetRecord, InstructionExample
from tests.conftest import bearer, user_with_role, wait_for
from tests.factories import ProjectFactory, curate, served

QUESTION = "How do I get a refund?"
FIRST_ANSWER = "Ask for a refund within 14 days from Billing."
REVISED_ANSWER = "Open Billing, choose Refund, and ask within 30 days of payment."


def _reviewed(project, reviewer, *, decision="corrected", ideal_answer=FIRST_ANSWER) -> Review:
    interaction = served(project, QUESTION)
    return review_submit(
        interaction=interaction, reviewer=reviewer, decision=decision, ideal_answer=ideal_answer
    )


def _revisions(review: Review) -> list[tuple]:
    return list(review.revisions.order_by("number").values_list("number", "decision", "author"))


# ---------------------------------------------------------------------------------------------
# The service


@pytest.mark.django_db
def test_a_reviewer_revises_their_own_review_and_every_revision_is_kept(project):
    reviewer = user_with_role(project, "reviewer", "kim")
    review = _reviewed(project, reviewer)
    submitted_at = review.updated_at

    revised = review_revise(
        review=review,
        reviser=ReviewReviser(user=reviewer),
        decision="corrected",
        ideal_answer=f"  {REVISED_ANSWER}\n",
        note="Refunds changed in May.",
    )

    revised.refresh_from_db()
    assert (revised.decision, revised.ideal_answer, revised.note) == (
        "corrected",
        REVISED_ANSWER,
        "Refunds changed in May.",
    )
    assert revised.reviewer == reviewer, "the reviewer stays who submitted it"
    assert revised.updated_at > submitted_at
    assert _revisions(revised) == [(1, "corrected", "kim"), (2, "corrected", "kim")]
    first = revised.revisions.get(number=1)
    assert (first.ideal_answer, first.note, first.revised_by) == (FIRST_ANSWER, "", reviewer)


@pytest.mark.django_db
def test_an_admin_revises_anyones_review_and_other_reviewers_and_viewers_may_not(project):
    review = _reviewed(project, user_with_role(project, "reviewer", "kim"))
    for outsider in (
        user_with_role(project, "reviewer", "lee"),
        user_with_role(project, "viewer", "val"),
        get_user_model().objects.create_user(username="stranger"),
    ):
        with pytest.raises(ReviewRevisionForbidden):
            review_revise(review=review, reviser=ReviewReviser(user=outsider), decision="rejected")

    admin = user_with_role(project, "admin", "ada")
    review_revise(review=review, reviser=ReviewReviser(user=admin), decision="rejected")

    assert _revisions(review) == [(1, "corrected", "kim"), (2, "rejected", "ada")]
    review.refresh_from_db()
    assert (review.decision, review.ideal_answer) == ("rejected", "")


@pytest.mark.django_db
def test_only_an_active_secret_key_of_the_project_with_the_datasets_scope_revises(project):
    review = _reviewed(project, user_with_role(project, "reviewer", "kim"))
    other_project_key = api_key_create(
        project=ProjectFactory(), kind="secret", name="other", scopes=["datasets"]
    ).api_key
    public_key = api_key_create(
        project=project, kind="public", name="widget", allowed_origins=["https://app.example"]
    ).api_key
    app_key = api_key_create(project=project, kind="secret", name="app").api_key
    revoked_key = api_key_revoke(
        api_key=api_key_create(
            project=project, kind="secret", name="old", scopes=["datasets"]
        ).api_key
    )
    for key in (other_project_key, public_key, app_key, revoked_key):
        with pytest.raises(ReviewRevisionForbidden):
            review_revise(review=review, reviser=ReviewReviser(api_key=key), decision="rejected")
    assert review.revisions.count() == 1

    curator = api_key_create(project=project, kind="secret", name="curator", scopes=["datasets"])
    review_revise(
        review=review, reviser=ReviewReviser(api_key=curator.api_key), decision="rejected"
    )
    assert review.revisions.count() == 2


@pytest.mark.django_db
def test_an_unchanged_or_invalid_revision_is_refused_and_stores_nothing(project):
    reviewer = user_with_role(project, "reviewer", "kim")
    review = _reviewed(project, reviewer, decision="approved", ideal_answer="")
    reviser = ReviewReviser(user=reviewer)

    with pytest.raises(ReviewRevisionUnchanged):
        # An approval carries no ideal answer: one typed anyway changes nothing.
        review_revise(review=review, reviser=reviser, decision="approved", ideal_answer="x")
    with pytest.raises(ReviewRevisionInvalid) as unknown:
        review_revise(review=review, reviser=reviser, decision="maybe")
    assert unknown.value.field == "decision"
    with pytest.raises(ReviewRevisionInvalid) as without_answer:
        review_revise(review=review, reviser=reviser, decision="corrected", ideal_answer="  ")
    assert without_answer.value.field == "ideal_answer"

    assert review.revisions.count() == 1
    review.refresh_from_db()
    assert review.decision == "approved"


@pytest.mark.django_db
def test_a_review_superseded_by_a_later_one_is_not_revised(project):
    kim = user_with_role(project, "reviewer", "kim")
    first = _reviewed(project, kim)
    review_submit(interaction=first.interaction, reviewer=kim, decision="approved")

    with pytest.raises(ReviewSuperseded):
        review_revise(review=first, reviser=ReviewReviser(user=kim), decision="rejected")


@pytest.mark.django_db
def test_the_verified_answer_follows_the_revision_and_a_rejection_withdraws_it(project):
    reviewer = user_with_role(project, "reviewer", "kim")
    interaction = served(project, QUESTION)
    rating_submit(
        interaction=interaction, rater_id="u", source="api", thumb="down", correction=FIRST_ANSWER
    )
    review = review_submit(interaction=interaction, reviewer=reviewer, decision="approved")
    reviser = ReviewReviser(user=reviewer)
    assert VerifiedAnswer.objects.get(interaction=interaction, status="active").answer == (
        FIRST_ANSWER
    )

    review_revise(review=review, reviser=reviser, decision="corrected", ideal_answer=REVISED_ANSWER)
    active = VerifiedAnswer.objects.get(interaction=interaction, status="active")
    assert (active.answer, active.review_id) == (REVISED_ANSWER, review.pk)

    review_revise(review=review, reviser=reviser, decision="approved")
    assert VerifiedAnswer.objects.get(interaction=interaction, status="active").answer == (
        FIRST_ANSWER
    )

    review_revise(review=review, reviser=reviser, decision="rejected")
    assert not VerifiedAnswer.objects.filter(interaction=interaction, status="active").exists()
    assert VerifiedAnswer.objects.filter(interaction=interaction).count() == 3


@pytest.mark.django_db
def test_a_note_alone_leaves_the_verified_answer_as_it_is(project):
    reviewer = user_with_role(project, "reviewer", "kim")
    review = _reviewed(project, reviewer)
    published = VerifiedAnswer.objects.get(interaction=review.interaction)

    review_revise(
        review=review,
        reviser=ReviewReviser(user=reviewer),
        decision="corrected",
        ideal_answer=FIRST_ANSWER,
        note="Checked with Billing.",
    )

    assert list(VerifiedAnswer.objects.filter(interaction=review.interaction)) == [published]
    published.refresh_from_db()
    assert published.status == "active"


@pytest.mark.django_db
def test_recuration_replaces_the_example_and_the_sweep_finds_a_revision_it_missed(project):
    reviewer = user_with_role(project, "reviewer", "kim")
    review = _reviewed(project, reviewer)
    example = curate(project, review.interaction)[review.interaction_id]
    assert example.messages[-1]["content"] == FIRST_ANSWER

    # Outside a committed transaction, the curation task this queues never runs: as if lost.
    review_revise(
        review=review,
        reviser=ReviewReviser(user=reviewer),
        decision="corrected",
        ideal_answer=REVISED_ANSWER,
    )
    assert review.interaction_id in interactions_needing_curation().get(project.pk, [])

    recurated = curate(project, review.interaction)[review.interaction_id]
    assert recurated.pk == example.pk
    assert recurated.messages[-1]["content"] == REVISED_ANSWER
    assert InstructionExample.objects.filter(interaction=review.interaction).count() == 1


@pytest.mark.django_db
def test_the_migration_gives_each_existing_review_its_first_revision(project):
    reviewer = user_with_role(project, "reviewer", "kim")
    interaction = served(project, QUESTION)
    # Written as the table held reviews before revisions existed.
    review = Review.objects.create(
        interaction=interaction, reviewer=reviewer, decision="rejected", note="off topic"
    )
    migration = importlib.import_module("feedback.migrations.0002_review_revisions")

    migration.first_revisions_create(apps, None)

    revision = ReviewRevision.objects.get(review=review)
    assert (revision.number, revision.decision, revision.note, revision.author) == (
        1,
        "rejected",
        "off topic",
        "kim",
    )
    assert revision.revised_by == reviewer
    review.refresh_from_db()
    assert revision.created_at == review.created_at == review.updated_at


# ---------------------------------------------------------------------------------------------
# The API


@pytest.fixture
def datasets_key(project) -> str:
    return api_key_create(
        project=project, kind="secret", name="curator", scopes=["datasets"]
    ).raw_key


def _post_revision(client, key: str, review_id: int, body) -> object:
    return client.post(
        f"/api/v1/reviews/{review_id}/revisions",
        data=json.dumps(body),
        content_type="application/json",
        **bearer(key),
    )


@pytest.mark.django_db
def test_the_api_revises_a_review_as_the_key_and_reads_it_back(client, project, datasets_key):
    review = _reviewed(project, user_with_role(project, "reviewer", "kim"))

    response = _post_revision(
        client, datasets_key, review.pk, {"decision": "rejected", "note": "Out of date."}
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["id"], body["decision"], body["ideal_answer"], body["note"]) == (
        review.pk,
        "rejected",
        "",
        "Out of date.",
    )
    assert body["reviewer"] == "kim"
    prefix = review.interaction.project.api_keys.get(name="curator").display_prefix
    assert [(r["number"], r["decision"], r["author"]) for r in body["revisions"]] == [
        (1, "corrected", "kim"),
        (2, "rejected", f"API key curator ({prefix}…)"),
    ]
    assert ReviewRevision.objects.get(review=review, number=2).revised_by_api_key.name == "curator"

    detail = client.get(f"/api/v1/reviews/{review.pk}", **bearer(datasets_key))
    assert detail.status_code == 200
    assert detail.json() == body
    listed = client.get(
        f"/api/v1/interactions/{review.interaction_id}/reviews", **bearer(datasets_key)
    )
    assert listed.status_code == 200
    assert listed.json() == {"reviews": [body]}


@pytest.mark.django_db
def test_the_api_keeps_the_note_when_a_revision_leaves_it_out(client, project, datasets_key):
    review = _reviewed(project, user_with_role(project, "reviewer", "kim"))
    _post_revision(client, datasets_key, review.pk, {"decision": "rejected", "note": "Old."})

    response = _post_revision(
        client,
        datasets_key,
        review.pk,
        {"decision": "corrected", "ideal_answer": REVISED_ANSWER},
    )

    assert response.status_code == 201, response.content
    assert (response.json()["ideal_answer"], response.json()["note"]) == (REVISED_ANSWER, "Old.")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (
            {"decision": "corrected", "ideal_answer": FIRST_ANSWER},
            409,
            "review_revision_unchanged",
            None,
        ),
        (
            {"decision": "corrected", "ideal_answer": " "},
            400,
            "invalid_review_revision",
            "ideal_answer",
        ),
        ({"decision": "maybe"}, 400, "invalid_request", "decision"),
        ({}, 400, "invalid_request", "decision"),
        ({"decision": "rejected", "note": "a\x00b"}, 400, "invalid_value", "note"),
        (
            {"decision": "corrected", "ideal_answer": "\ud800"},
            400,
            "invalid_value",
            "ideal_answer",
        ),
        ({"decision": "rejected", "note": "x" * 5001}, 400, "invalid_request", "note"),
    ],
)
def test_the_api_answers_a_refused_revision_with_a_json_error(
    client, project, datasets_key, body, status, code, param
):
    review = _reviewed(project, user_with_role(project, "reviewer", "kim"))

    response = _post_revision(client, datasets_key, review.pk, body)

    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["message"]
    assert review.revisions.count() == 1


@pytest.mark.django_db
def test_the_api_refuses_a_superseded_review_with_409(client, project, datasets_key):
    kim = user_with_role(project, "reviewer", "kim")
    first = _reviewed(project, kim)
    review_submit(interaction=first.interaction, reviewer=kim, decision="approved")

    response = _post_revision(client, datasets_key, first.pk, {"decision": "rejected"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "review_superseded"


@pytest.mark.django_db
def test_the_api_needs_a_secret_key_with_the_datasets_scope_of_the_reviews_project(
    client, project, secret_key, public_key, datasets_key
):
    review = _reviewed(project, user_with_role(project, "reviewer", "kim"))
    other_key = api_key_create(
        project=ProjectFactory(), kind="secret", name="other", scopes=["datasets"]
    ).raw_key
    body = {"decision": "rejected"}

    without_scope = _post_revision(client, secret_key, review.pk, body)
    public = _post_revision(client, public_key, review.pk, body)
    elsewhere = _post_revision(client, other_key, review.pk, body)
    missing = client.post(f"/api/v1/reviews/{review.pk}/revisions", data=body)
    unknown = _post_revision(client, datasets_key, review.pk + 1000, body)

    assert (without_scope.status_code, without_scope.json()["error"]["code"]) == (
        403,
        "missing_scope",
    )
    assert public.status_code == 403
    assert (elsewhere.status_code, elsewhere.json()["error"]["code"]) == (404, "not_found")
    assert missing.status_code == 401
    assert unknown.status_code == 404
    assert review.revisions.count() == 1


# ---------------------------------------------------------------------------------------------
# The interaction page


def _page_url(review: Review) -> str:
    return reverse(
        "dashboard:interaction_detail",
        kwargs={
            "project_slug": review.interaction.project.slug,
            "interaction_id": review.interaction_id,
        },
    )


def _revise_url(review: Review) -> str:
    return reverse(
        "dashboard:review_revise",
        kwargs={
            "project_slug": review.interaction.project.slug,
            "interaction_id": review.interaction_id,
            "review_id": review.pk,
        },
    )


def _form(review: Review, **fields) -> dict:
    return {f"review-{review.pk}-{name}": value for name, value in fields.items()}


@pytest.mark.django_db
def test_the_page_revises_a_review_and_shows_its_history(client, project):
    kim = user_with_role(project, "reviewer", "kim")
    review = _reviewed(project, kim)
    client.force_login(kim)
    page = client.get(_page_url(review))
    assert b"Revise this review" in page.content

    response = client.post(
        _revise_url(review),
        _form(review, decision="rejected", ideal_answer="", note="Refunds moved to the shop."),
        follow=True,
    )

    assert response.redirect_chain == [(f"{_page_url(review)}#reviews", 302)]
    html = response.content.decode()
    assert "Review revised" in html
    assert "History (2 revisions)" in html
    assert "submitted as Corrected: the ideal answer is written" in html
    assert (
        "decision Corrected: the ideal answer is written → Rejected: keep it out of training "
        "data; ideal answer removed; note changed"
    ) in html
    assert "Refunds moved to the shop." in html
    assert _revisions(review) == [(1, "corrected", "kim"), (2, "rejected", "kim")]


@pytest.mark.django_db
def test_the_page_offers_no_form_to_another_reviewer_and_refuses_their_post(client, project):
    review = _reviewed(project, user_with_role(project, "reviewer", "kim"))
    client.force_login(user_with_role(project, "reviewer", "lee"))

    assert b"Revise this review" not in client.get(_page_url(review)).content
    response = client.post(_revise_url(review), _form(review, decision="rejected"))

    assert response.status_code == 403
    assert "Only its reviewer or a project admin may revise this review." in (
        response.content.decode()
    )
    assert review.revisions.count() == 1


@pytest.mark.django_db
def test_a_viewer_may_not_post_a_revision(client, project):
    review = _reviewed(project, user_with_role(project, "reviewer", "kim"))
    client.force_login(user_with_role(project, "viewer", "val"))

    assert client.post(_revise_url(review), _form(review, decision="rejected")).status_code == 403
    assert review.revisions.count() == 1


@pytest.mark.django_db
def test_an_admin_revises_from_the_page(client, project):
    review = _reviewed(project, user_with_role(project, "reviewer", "kim"))
    client.force_login(user_with_role(project, "admin", "ada"))

    response = client.post(_revise_url(review), _form(review, decision="approved"))

    assert response.status_code == 302
    assert _revisions(review) == [(1, "corrected", "kim"), (2, "approved", "ada")]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "status", "error"),
    [
        (
            {"decision": "corrected", "ideal_answer": FIRST_ANSWER},
            409,
            "This revision changes nothing in the review.",
        ),
        (
            {"decision": "corrected", "ideal_answer": ""},
            422,
            "A corrected review needs the ideal answer.",
        ),
        ({"decision": "maybe"}, 422, "Select a valid choice."),
    ],
)
def test_the_page_shows_a_refused_revision_as_a_form_error(client, project, fields, status, error):
    kim = user_with_role(project, "reviewer", "kim")
    review = _reviewed(project, kim)
    client.force_login(kim)

    response = client.post(_revise_url(review), _form(review, **fields))

    assert response.status_code == status
    html = response.content.decode()
    assert error in html
    assert '<details class="review-revise" open>' in html
    assert review.revisions.count() == 1


@pytest.mark.django_db
def test_the_admin_shows_a_reviews_revisions(client, project):
    kim = user_with_role(project, "reviewer", "kim")
    review = _reviewed(project, kim)
    review_revise(
        review=review, reviser=ReviewReviser(user=kim), decision="rejected", note="Outdated."
    )
    client.force_login(
        get_user_model().objects.create_superuser(username="root", password="pw-root")
    )

    page = client.get(reverse("admin:feedback_review_change", args=[review.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert "Review revisions" in html
    assert "Outdated." in html
    assert FIRST_ANSWER in html


# ---------------------------------------------------------------------------------------------
# End to end, on a real curation worker


@pytest.mark.django_db(transaction=True)
def test_a_revision_through_the_api_reaches_the_next_dataset_version(client, celery_worker):
    project = ProjectFactory()
    key = api_key_create(project=project, kind="secret", name="curator", scopes=["datasets"])
    review = _reviewed(project, user_with_role(project, "reviewer", "kim"))
    wait_for(
        lambda: InstructionExample.objects.filter(interaction=review.interaction).exists(),
        what="the worker curating the reviewed interaction",
        deadline_seconds=60,
    )
    before, _ = dataset_snapshot(project=project, trigger="command")

    response = _post_revision(
        client,
        key.raw_key,
        review.pk,
        {"decision": "corrected", "ideal_answer": REVISED_ANSWER},
    )
    assert response.status_code == 201, response.content
    wait_for(
        lambda: InstructionExample.objects.filter(
            interaction=review.interaction, messages__contains=[{"content": REVISED_ANSWER}]
        ).exists(),
        what="the worker curating the revised review",
        deadline_seconds=60,
    )
    after, created = dataset_snapshot(project=project, trigger="command")

    assert created
    assert after.previous == before
    records = DatasetRecord.objects.filter(dataset_version=after, kind="sft")
    assert [record.chosen for record in records] == [REVISED_ANSWER]
    assert [r.chosen for r in DatasetRecord.objects.filter(dataset_version=before, kind="sft")] == [
        FIRST_ANSWER
    ]
    assert InstructionExample.objects.filter(interaction=review.interaction).count() == 1


@pytest.mark.django_db
def test_a_revision_that_withdraws_a_correction_makes_an_index_refresh_due(project):
    reviewer = user_with_role(project, "reviewer", "kim")
    review = _reviewed(project, reviewer)
    active = IndexVersion.objects.create(
        project=project,
        number=1,
        status=IndexVersion.Status.ACTIVE,
        embedding_model="bundled",
        activated_at=timezone.now(),
    )
    assert index_refresh_due(project=project) is None, "the correction is in the index already"

    review_revise(review=review, reviser=ReviewReviser(user=reviewer), decision="rejected")

    assert index_refresh_due(project=project) == (
        f"1 approved correction(s) added or revised since index v{active.number}"
    )
