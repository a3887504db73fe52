"""Curation: policy filters, training prompts as served, PII scrubbing, near-duplicate
clusters with the real embedding model, a leakage-safe split, and idempotency."""

import itertools

import numpy as np
import pytest
from django.contrib.auth import get_user_model

from feedback.services.ratings import rating_submit
from feedback.services.reviews import review_submit
from flywheel.models import Interaction
from flywheel.services.interactions import interactions_log_batch
from retrain.curation.policy import curation_policy_get
from retrain.models import CurationPolicy, InstructionExample
from tests.conftest import DEMO_KNOWLEDGE_BASE, index_folder
from tests.factories import PARAPHRASES, ProjectFactory, curate, served


@pytest.fixture
def reviewer(db):
    return get_user_model().objects.create_user(username="reviewer", password="x")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "ratings, status, signal",
    [
        ([{"thumb": "up"}], "included", "thumbs_up"),
        ([{"thumb": "down"}], "excluded", "negative"),
        ([{"thumb": "down", "correction": "Refunds take 14 days."}], "included", "user_correction"),
        ([{"score": 5}], "included", "high_score"),
        ([{"score": 3}], "excluded", "none"),
        ([{"score": 1}], "excluded", "negative"),
        ([{"thumb": "up"}, {"thumb": "down"}, {"thumb": "down"}], "excluded", "negative"),
        ([{"comment": "ok"}], "excluded", "none"),
    ],
)
def test_end_user_signals_follow_the_default_policy(ratings, status, signal):
    project = ProjectFactory()
    interaction = served(project, "How do I get a refund?")
    for number, fields in enumerate(ratings):
        rating_submit(interaction=interaction, rater_id=f"u{number}", source="api", **fields)

    example = curate(project, interaction)[interaction.pk]

    assert (example.status, example.signal) == (status, signal)


@pytest.mark.django_db
def test_a_review_outranks_ratings_and_a_correction_becomes_the_target(reviewer):
    project = ProjectFactory()
    rejected, corrected = served(project, "Refund?"), served(project, "Plans?", "Free only.")
    for interaction in (rejected, corrected):
        rating_submit(interaction=interaction, rater_id="u", source="api", thumb="up")
    review_submit(interaction=rejected, reviewer=reviewer, decision="rejected")
    review_submit(
        interaction=corrected,
        reviewer=reviewer,
        decision="corrected",
        ideal_answer="Sprout is free; Canopy costs 9 euros.",
    )

    examples = curate(project, rejected, corrected)

    assert examples[rejected.pk].status == "excluded"
    assert examples[rejected.pk].exclusion_reason == "rejected by a reviewer"
    example = examples[corrected.pk]
    assert example.signal == "reviewer_correction" and example.review.decision == "corrected"
    assert example.messages[-1] == {
        "role": "assistant",
        "content": "Sprout is free; Canopy costs 9 euros.",
    }
    assert example.rejected_answer == "Free only."


@pytest.mark.django_db
def test_policy_switches_and_length_limits_change_what_is_included():
    project = ProjectFactory()
    thumbs_up, scored, long_answer = (
        served(project, "One?"),
        served(project, "Two?"),
        served(project, "Three?", "x" * 80),
    )
    rating_submit(interaction=thumbs_up, rater_id="u", source="api", thumb="up")
    rating_submit(interaction=scored, rater_id="u", source="api", score=4)
    rating_submit(interaction=long_answer, rater_id="u", source="api", score=5)
    CurationPolicy.objects.update_or_create(
        project=project,
        defaults={"include_thumbs_up": False, "min_score": 5, "max_answer_chars": 50},
    )

    examples = curate(project, thumbs_up, scored, long_answer)

    assert {e.status for e in examples.values()} == {"excluded"}
    assert examples[long_answer.pk].exclusion_reason == "answer length outside the policy"


@pytest.mark.django_db
def test_examples_carry_the_context_as_served_and_scrub_pii_from_user_text():
    project = ProjectFactory()
    interaction = served(project, "I'm jane.roe@example.com, card 4111 1111 1111 1111. Refund?")
    rating_submit(
        interaction=interaction,
        rater_id="u",
        source="api",
        thumb="down",
        correction="Write to us from jane.roe@example.com within 14 days.",
    )

    example = curate(project, interaction)[interaction.pk]

    system, user, assistant = example.messages
    assert system["role"] == "system" and "[1] Billing — Billing > Refunds" in system["content"]
    assert "Refunds within 14 days." in system["content"]
    assert user["content"] == "I'm <EMAIL>, card <CREDIT_CARD>. Refund?"
    assert assistant["content"] == "Write to us from <EMAIL> within 14 days."
    assert example.rating.rater_id == "u"
    interaction.refresh_from_db()
    assert "jane.roe@example.com" in interaction.query_text, "the log itself is left as it was"


@pytest.mark.django_db
def test_ip_addresses_are_scrubbed_from_end_user_messages_unless_private_and_kept_in_answers(
    reviewer,
):
    project = ProjectFactory()
    interaction = served(
        project,
        "My worker 10.0.0.15 cannot reach you from 203.0.113.9, mail me at jo@example.com",
        "Allow 198.51.100.7 in the firewall of 10.0.0.15 or write to ops@example.com.",
    )
    review_submit(
        interaction=interaction,
        reviewer=reviewer,
        decision="corrected",
        ideal_answer="Allow 198.51.100.20 in the firewall of 10.0.0.15; mail ops@example.com.",
    )

    example = curate(project, interaction)[interaction.pk]

    _, user, assistant = example.messages
    assert user["content"] == (
        "My worker 10.0.0.15 cannot reach you from <IP_ADDRESS>, mail me at <EMAIL>"
    )
    assert assistant["content"] == "Allow 198.51.100.20 in the firewall of 10.0.0.15; mail <EMAIL>."
    assert example.rejected_answer == (
        "Allow 198.51.100.7 in the firewall of 10.0.0.15 or write to <EMAIL>."
    )
    assert example.pii_scrubbed == {"EMAIL": 3, "IP_ADDRESS": 1}


@pytest.mark.django_db
def test_the_policy_chooses_the_kinds_per_source_and_may_scrub_private_addresses(reviewer):
    project = ProjectFactory()
    curation_policy_get(project=project)
    CurationPolicy.objects.filter(project=project).update(
        scrub_private_ips=True,
        pii_entities={
            "user_messages": ["IP_ADDRESS"],
            "model_answers": ["EMAIL", "IP_ADDRESS"],
            "corrections": ["IP_ADDRESS"],
        },
    )
    interaction = served(
        project, "Is 192.168.1.4 blocked? I'm jo@example.com", "Yes, write to ops@example.com."
    )
    review_submit(
        interaction=interaction,
        reviewer=reviewer,
        decision="corrected",
        ideal_answer="No: 192.168.1.4 is fine, write to ops@example.com.",
    )

    example = curate(project, interaction)[interaction.pk]

    _, user, assistant = example.messages
    assert user["content"] == "Is <IP_ADDRESS> blocked? I'm jo@example.com"
    assert assistant["content"] == "No: <IP_ADDRESS> is fine, write to ops@example.com."
    assert example.rejected_answer == "Yes, write to <EMAIL>."
    assert example.pii_scrubbed == {"EMAIL": 1, "IP_ADDRESS": 2}


@pytest.mark.django_db
def test_a_logged_interaction_keeps_the_prompt_the_app_logged(reviewer):
    project = ProjectFactory()
    logged = [
        {"role": "system", "content": "You are Acme's billing bot. Context: refunds take 5 days."},
        {"role": "user", "content": "How long does a refund take?"},
        {"role": "assistant", "content": "Five days."},
        {"role": "user", "content": "Even for annual plans?"},
    ]
    [result] = interactions_log_batch(
        project=project,
        interactions=[
            {
                "messages": logged,
                "response": "Yes, five days.",
                "retrieved": [{"text": "Refunds take 5 days.", "rank": 1}],
            }
        ],
    )
    interaction = Interaction.objects.get(pk=result.id)
    review_submit(
        interaction=interaction,
        reviewer=reviewer,
        decision="corrected",
        ideal_answer="Yes: five working days for every plan.",
    )

    example = curate(project, interaction)[interaction.pk]

    assert example.messages == [
        *logged,
        {"role": "assistant", "content": "Yes: five working days for every plan."},
    ]
    assert example.rejected_answer == "Yes, five days."


@pytest.mark.django_db
def test_near_duplicates_share_a_cluster_whose_best_rated_member_is_kept(reviewer):
    project = ProjectFactory()
    refund = [served(project, question) for question in PARAPHRASES[0]]
    other = served(project, "What does Grove cost?")
    rating_submit(interaction=refund[0], rater_id="u", source="api", thumb="up")
    rating_submit(interaction=refund[1], rater_id="u", source="api", score=5)
    review_submit(
        interaction=refund[2],
        reviewer=reviewer,
        decision="corrected",
        ideal_answer="Ask within 14 days from Settings > Billing.",
    )
    rating_submit(interaction=other, rater_id="u", source="api", thumb="up")

    examples = curate(project, *refund, other)

    assert len({examples[i.pk].cluster for i in refund}) == 1
    assert examples[other.pk].cluster != examples[refund[0].pk].cluster
    statuses = [examples[i.pk].status for i in refund]
    assert statuses == ["duplicate", "duplicate", "included"], "the reviewer's correction wins"
    assert examples[other.pk].status == "included"


@pytest.mark.django_db
def test_exact_duplicates_are_found_by_hash():
    project = ProjectFactory()
    twins = [served(project, "Where is the bin?", "In the shelf menu.") for _ in range(2)]
    for twin in twins:
        rating_submit(interaction=twin, rater_id="u", source="api", thumb="up")

    examples = curate(project, *twins)

    first, second = (examples[t.pk] for t in twins)
    assert first.content_hash == second.content_hash
    assert first.cluster == second.cluster
    assert sorted([first.status, second.status]) == ["duplicate", "included"]


@pytest.mark.django_db
def test_no_cluster_spans_train_and_eval_and_splits_are_stable():
    project = ProjectFactory()
    curation_policy_get(project=project)
    CurationPolicy.objects.filter(project=project).update(eval_fraction=0.5)
    interactions = []
    for group in PARAPHRASES * 3:  # repeats make exact duplicates too
        for question in group:
            interaction = served(project, question, answer=f"Answer to: {question}")
            rating_submit(interaction=interaction, rater_id="u", source="api", thumb="up")
            interactions.append(interaction)

    examples = curate(project, *interactions)
    again = curate(project, *interactions)

    splits_by_cluster = {}
    for example in examples.values():
        splits_by_cluster.setdefault(example.cluster, set()).add(example.split)
    assert all(len(splits) == 1 for splits in splits_by_cluster.values())
    assert {split for splits in splits_by_cluster.values() for split in splits} == {"train", "eval"}
    train = [e for e in examples.values() if e.split == "train"]
    held_out = [e for e in examples.values() if e.split == "eval"]
    similarity = (
        np.array([e.question_embedding for e in train])
        @ np.array([e.question_embedding for e in held_out]).T
    )
    threshold = CurationPolicy.objects.get(project=project).near_duplicate_threshold
    assert similarity.max() < threshold, "no eval question has a near-duplicate in train"
    assert {k: (e.cluster, e.split) for k, e in again.items()} == {
        k: (e.cluster, e.split) for k, e in examples.items()
    }
    assert InstructionExample.objects.filter(project=project).count() == len(interactions)


@pytest.mark.django_db
def test_removing_all_feedback_removes_the_example():
    project = ProjectFactory()
    interaction = served(project, "Refund?")
    rating = rating_submit(interaction=interaction, rater_id="u", source="api", thumb="up")
    curate(project, interaction)

    rating.delete()
    curate(project, interaction)

    assert not InstructionExample.objects.filter(interaction=interaction).exists()


def test_the_paraphrase_set_is_really_separable():
    """Guards the fixture above: paraphrases are above the default threshold's reach by
    single-link chaining, distinct questions far below it."""
    from flywheel.ml.loading import embed_texts

    threshold = CurationPolicy._meta.get_field("near_duplicate_threshold").default
    for first, second in itertools.combinations(range(len(PARAPHRASES)), 2):
        vectors = embed_texts(PARAPHRASES[first] + PARAPHRASES[second])
        across = vectors[: len(PARAPHRASES[first])] @ vectors[len(PARAPHRASES[first]) :].T
        assert across.max() < threshold


def test_an_example_whose_served_passages_miss_the_answer_gets_the_passage_that_holds_it(
    reviewer,
):
    project = ProjectFactory()
    index_folder(project, DEMO_KNOWLEDGE_BASE)
    # Served with a billing passage only: retrieval missed the page that holds the answer.
    interaction = served(project, "How long does the bin keep deleted notes?", "Forever.")
    answer = "A deleted note stays in the shelf's bin for 30 days."
    review_submit(
        interaction=interaction, reviewer=reviewer, decision="corrected", ideal_answer=answer
    )

    system, _, assistant = curate(project, interaction)[interaction.pk].messages

    assert assistant["content"] == answer
    context = system["content"].split("Context:\n", 1)[1]
    first, second = context.split("\n\n[2]", 1)
    assert first.startswith("[1]") and "30 days" in first, "the passage holding the answer"
    assert "Refunds within 14 days." in second, "the served passage stays, as a distractor"
