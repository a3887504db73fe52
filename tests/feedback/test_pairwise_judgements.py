"""Pairwise judgements: a reviewer says which is better, the served answer or a candidate's
shadow answer to the same prompt (or a tie), in the review queue; the judgements become
preference pairs for DPO."""

import json

import pytest
from django.urls import reverse

from feedback.models import PairwiseJudgement
from feedback.services.pairwise import (
    PairwiseJudgementForbidden,
    PairwiseJudgementInvalid,
    ShadowAnswerNotComparable,
    pairwise_judgement_submit,
)
from feedback.services.ratings import rating_submit
from flywheel.models import ModelVersion, ShadowAnswer
from retrain.curation.pairwise import PAIRWISE_SIGNAL, pairwise_preferences_build
from retrain.curation.policy import curation_policy_get
from retrain.datasets.exports import FEATURES, dataset_export_lines
from retrain.datasets.snapshot import dataset_snapshot
from retrain.models import InstructionExample
from tests.conftest import user_with_role
from tests.factories import curate, served

HTMX = {"HTTP_HX_REQUEST": "true"}
EXPERIMENT_ID = 41


def shadow_answer_of(interaction, response: str, *, error: str = "") -> ShadowAnswer:
    """What the shadow task stores when a candidate answers the interaction's prompt."""
    candidate, _ = ModelVersion.objects.get_or_create(
        project=interaction.project, name="candidate-lora", defaults={"base_model": ""}
    )
    return ShadowAnswer.objects.create(
        interaction=interaction,
        experiment_id=EXPERIMENT_ID,
        model_version=candidate,
        response=response,
        retrieved=interaction.retrieved,
        latency_ms=420,
        error=error,
    )


@pytest.fixture
def reviewer(project):
    return user_with_role(project, "reviewer", "riley")


@pytest.fixture
def complaint(project):
    """A served answer an end user turned down: first in the review queue."""
    interaction = served(project, "How do I get a refund?", answer="Refunds are not possible.")
    rating_submit(interaction=interaction, rater_id="end-user", source="widget", thumb="down")
    return interaction


# --- the service -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_reviewer_judges_and_judging_again_replaces_the_judgement(complaint, reviewer):
    shadow = shadow_answer_of(complaint, "Ask for a refund within 14 days.")

    first = pairwise_judgement_submit(
        shadow_answer=shadow, reviewer=reviewer, preferred="shadow", note=" cites the policy "
    )
    again = pairwise_judgement_submit(shadow_answer=shadow, reviewer=reviewer, preferred="tie")

    assert again.pk == first.pk
    stored = PairwiseJudgement.objects.get()
    assert (stored.interaction_id, stored.preferred, stored.note) == (complaint.pk, "tie", "")
    assert first.note == "cites the policy"


@pytest.mark.django_db
def test_judgements_are_refused_with_domain_errors(project, complaint, reviewer):
    shadow = shadow_answer_of(complaint, "Ask for a refund within 14 days.")
    with pytest.raises(PairwiseJudgementInvalid) as invalid:
        pairwise_judgement_submit(shadow_answer=shadow, reviewer=reviewer, preferred="both")
    assert invalid.value.field == "preferred"

    viewer = user_with_role(project, "viewer", "vic")
    with pytest.raises(PairwiseJudgementForbidden):
        pairwise_judgement_submit(shadow_answer=shadow, reviewer=viewer, preferred="served")

    failed = shadow_answer_of(served(project, "Other question?"), "", error="generation timed out")
    with pytest.raises(ShadowAnswerNotComparable, match="generation timed out"):
        pairwise_judgement_submit(shadow_answer=failed, reviewer=reviewer, preferred="served")
    assert not PairwiseJudgement.objects.exists()


# --- the review queue ----------------------------------------------------------------------------


def _queue_url(project) -> str:
    return reverse("dashboard:queue", kwargs={"project_slug": project.slug})


def _judge_url(project, shadow) -> str:
    return reverse(
        "dashboard:queue_pairwise_judge",
        kwargs={
            "project_slug": project.slug,
            "interaction_id": shadow.interaction_id,
            "shadow_answer_id": shadow.pk,
        },
    )


@pytest.mark.django_db
def test_the_queue_shows_the_shadow_answer_beside_the_served_one(
    client, project, complaint, reviewer
):
    shadow = shadow_answer_of(complaint, "Ask for a refund within 14 days.")
    plain = served(project, "Where are my invoices?", answer="Under Billing.")
    rating_submit(interaction=plain, rater_id="end-user", source="widget", thumb="down")
    client.force_login(reviewer)

    page = client.get(_queue_url(project)).content.decode()

    assert "Side by side with a candidate" in page
    assert "Refunds are not possible." in page and "Ask for a refund within 14 days." in page
    assert "candidate-lora" in page
    assert _judge_url(project, shadow) in page
    # The next item has no shadow answer: no comparison for it.
    pairwise_judgement_submit(shadow_answer=shadow, reviewer=reviewer, preferred="served")
    client.post(
        reverse(
            "dashboard:queue_review",
            kwargs={"project_slug": project.slug, "interaction_id": complaint.pk},
        ),
        {"decision": "approved"},
    )
    page = client.get(_queue_url(project)).content.decode()
    assert "Where are my invoices?" in page and "Side by side" not in page


@pytest.mark.django_db
def test_a_judgement_from_the_queue_keeps_the_item_for_its_review(
    client, project, complaint, reviewer
):
    shadow = shadow_answer_of(complaint, "Ask for a refund within 14 days.")
    client.force_login(reviewer)
    client.get(_queue_url(project))  # leases the item

    response = client.post(
        _judge_url(project, shadow), {"preferred": "shadow", "note": "Right policy"}, **HTMX
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "the candidate&#x27;s shadow answer is better" in page
    assert "Your judgement: <strong>The candidate&#x27;s shadow answer is better</strong>" in page
    assert "How do I get a refund?" in page  # the same item, still to be reviewed
    judgement = PairwiseJudgement.objects.get()
    assert (judgement.reviewer, judgement.preferred, judgement.note) == (
        reviewer,
        "shadow",
        "Right policy",
    )
    assert not complaint.reviews.exists()


@pytest.mark.django_db
def test_bad_judgements_get_a_form_error_never_a_500(client, project, complaint, reviewer):
    shadow = shadow_answer_of(complaint, "Ask for a refund within 14 days.")
    client.force_login(reviewer)

    for data in ({}, {"preferred": "both"}, {"preferred": "shadow", "note": "nul\x00"}):
        response = client.post(_judge_url(project, shadow), data, **HTMX)
        assert response.status_code == 422, data
        assert 'class="error" role="alert"' in response.content.decode()
    no_page = client.post(_judge_url(project, shadow), {"preferred": "served"})
    assert no_page.status_code == 302  # without htmx: back to the queue

    failed = shadow_answer_of(served(project, "Other?"), "", error="timeout")
    other_item = reverse(
        "dashboard:queue_pairwise_judge",
        kwargs={
            "project_slug": project.slug,
            "interaction_id": complaint.pk,
            "shadow_answer_id": failed.pk,
        },
    )
    assert client.post(other_item, {"preferred": "served"}, **HTMX).status_code == 404
    assert PairwiseJudgement.objects.count() == 1

    viewer = user_with_role(project, "viewer", "vic")
    client.force_login(viewer)
    assert client.post(_judge_url(project, shadow), {"preferred": "tie"}).status_code == 403


# --- preference pairs ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_judgements_become_preference_pairs_in_the_dpo_shape(project, reviewer):
    policy = curation_policy_get(project=project)
    second_reviewer = user_with_role(project, "reviewer", "sam")
    refund = served(project, "How do I get a refund?", answer="Refunds are not possible.")
    better_refund = shadow_answer_of(refund, "Ask for a refund within 14 days.")
    pairwise_judgement_submit(shadow_answer=better_refund, reviewer=reviewer, preferred="shadow")
    pairwise_judgement_submit(
        shadow_answer=better_refund, reviewer=second_reviewer, preferred="tie"
    )
    invoices = served(project, "Where are my invoices?", answer="Under Billing > Invoices.")
    worse_invoices = shadow_answer_of(invoices, "Invoices are emailed to bob@example.com.")
    pairwise_judgement_submit(shadow_answer=worse_invoices, reviewer=reviewer, preferred="served")
    tied = served(project, "Can I pay by card?", answer="Yes, by card.")
    pairwise_judgement_submit(
        shadow_answer=shadow_answer_of(tied, "Yes, cards work."), reviewer=reviewer, preferred="tie"
    )
    split_vote = served(project, "Is there a dark mode?", answer="Yes.")
    split_shadow = shadow_answer_of(split_vote, "Yes, under Settings.")
    pairwise_judgement_submit(shadow_answer=split_shadow, reviewer=reviewer, preferred="served")
    pairwise_judgement_submit(
        shadow_answer=split_shadow, reviewer=second_reviewer, preferred="shadow"
    )

    pairs = pairwise_preferences_build(project=project, policy=policy)

    assert [(p.interaction_id, p.chosen, p.rejected) for p in pairs] == [
        (refund.pk, "Ask for a refund within 14 days.", "Refunds are not possible."),
        # The rejected shadow answer is scrubbed like any model answer.
        (invoices.pk, "Under Billing > Invoices.", "Invoices are emailed to <EMAIL>."),
    ]
    refund_pair = pairs[0]
    assert refund_pair.signal == PAIRWISE_SIGNAL and refund_pair.judgements == 1
    assert refund_pair.split == "train"
    row = refund_pair.as_dpo_row()
    assert list(row) == list(FEATURES["dpo"])
    system, question = row["prompt"]
    assert system["role"] == "system" and "Refunds within 14 days." in system["content"]
    assert question == {"role": "user", "content": "How do I get a refund?"}
    assert row["chosen"] == [{"role": "assistant", "content": "Ask for a refund within 14 days."}]
    assert row["rejected"] == [{"role": "assistant", "content": "Refunds are not possible."}]
    only_invoices = pairwise_preferences_build(project=project, interaction_ids=[invoices.pk])
    assert [pair.interaction_id for pair in only_invoices] == [invoices.pk]


@pytest.mark.django_db
def test_a_pair_takes_the_split_of_its_questions_cluster(project, reviewer):
    """No paraphrase of an eval question is trained on: a pair goes where the question's
    example, or the nearest curated question within the near-duplicate threshold, went."""
    curated = served(project, "How do I get a refund?")
    rating_submit(interaction=curated, rater_id="end-user", source="api", thumb="up")
    curate(project, curated)
    # The cluster's split is a pseudo-random draw: this one drew eval.
    InstructionExample.objects.filter(interaction=curated).update(
        split=InstructionExample.Split.EVAL
    )
    paraphrase = served(project, "How can I get a refund?")
    unrelated = served(project, "Which shortcut opens search?")
    for interaction in (curated, paraphrase, unrelated):
        pairwise_judgement_submit(
            shadow_answer=shadow_answer_of(interaction, "Forever, probably."),
            reviewer=reviewer,
            preferred="served",
        )

    pairs = pairwise_preferences_build(project=project)

    assert {pair.interaction_id: pair.split for pair in pairs} == {
        curated.pk: InstructionExample.Split.EVAL,
        paraphrase.pk: InstructionExample.Split.EVAL,
        unrelated.pk: InstructionExample.Split.TRAIN,
    }


@pytest.mark.django_db
def test_a_dataset_version_exports_judged_pairs_for_dpo(project, reviewer):
    """A judged interaction needs no curated example: its pair brings its own prompt."""
    refund = served(project, "How do I get a refund?", answer="Refunds are not possible.")
    better = shadow_answer_of(refund, "Ask for a refund within 14 days.")
    pairwise_judgement_submit(shadow_answer=better, reviewer=reviewer, preferred="shadow")
    assert not InstructionExample.objects.filter(interaction=refund).exists()

    version, created = dataset_snapshot(project=project, trigger="api")

    assert created and version.counts["preference_train"] == 1
    [row] = [
        json.loads(line)
        for line in dataset_export_lines(version=version, export_format="dpo", split="train")
    ]
    assert row["chosen"] == [{"role": "assistant", "content": "Ask for a refund within 14 days."}]
    assert row["rejected"] == [{"role": "assistant", "content": "Refunds are not possible."}]
    system, question = row["prompt"]
    assert system["role"] == "system" and "Refunds within 14 days." in system["content"]
    assert question == {"role": "user", "content": "How do I get a refund?"}
