"""Curation in batches: a batch gives the clusters and statuses that curating its interactions
one at a time gives, re-curating a batch updates, removes and keeps examples in place, and the
index-backed near-duplicate search agrees with the exact one on distinct questions."""

import random

import pytest
from django.contrib.auth import get_user_model

from feedback.services.ratings import rating_submit
from feedback.services.reviews import review_submit
from flywheel.ml.loading import embed_texts
from flywheel.models import Interaction
from flywheel.services.interactions import interaction_record
from retrain.curation import dedupe
from retrain.curation.pipeline import interactions_curate
from retrain.models import InstructionExample
from tests.factories import PARAPHRASES, SERVED_PASSAGE, ProjectFactory

BATCH_SIZE = 200
QUESTIONS = [question for group in PARAPHRASES for question in group] + [
    "How do I turn on two-factor sign-in?",
    "Can I export a shelf as PDF?",
    "Why does sync stop on my phone?",
    "Where do I change my billing address?",
]
ANSWERS = ["Settings → Billing.", "Use the shelf menu.", "Ask within 14 days."]
FEEDBACK = [
    {"thumb": "up"},
    {"thumb": "up"},
    {"thumb": "up"},
    {"thumb": "down"},
    {"thumb": "down", "correction": "Open Settings → Billing → Refunds."},
    {"score": 5},
    {"score": 2},
    "approved",
    "corrected",
    "rejected",
]


@pytest.fixture
def reviewer(db):
    return get_user_model().objects.create_user(username="reviewer", password="x")


def rated_interactions(projects, *, count: int, reviewer) -> list[tuple[Interaction, ...]]:
    """`count` rated interactions, the same in every project and logged in the same order:
    repeated questions and answers make exact duplicates, paraphrases near-duplicates."""
    rng = random.Random(7)
    embeddings = dict(zip(QUESTIONS, embed_texts(QUESTIONS), strict=True))
    rows = []
    for _ in range(count):
        question, answer, feedback = (
            rng.choice(QUESTIONS),
            rng.choice(ANSWERS),
            rng.choice(FEEDBACK),
        )
        row = []
        for project in projects:
            interaction = interaction_record(
                project=project,
                source=Interaction.Source.CHAT,
                messages=[{"role": "user", "content": question}],
                query_text=question,
                query_embedding=embeddings[question],
                response=answer,
                retrieved=[SERVED_PASSAGE],
                metadata={"flywheel": {"rag": True}},
            )
            if isinstance(feedback, dict):
                rating_submit(interaction=interaction, rater_id="u", source="api", **feedback)
            else:
                ideal = "Refunds: Settings → Billing." if feedback == "corrected" else ""
                review_submit(
                    interaction=interaction,
                    reviewer=reviewer,
                    decision=feedback,
                    ideal_answer=ideal,
                )
            row.append(interaction)
        rows.append(tuple(row))
    return rows


def curated_shape(interactions: list[Interaction]) -> list[tuple[int, str, str]]:
    """Per interaction, in order: which earlier interaction founded its cluster (by position),
    its status and its signal; comparable across projects, whose ids differ."""
    examples = {
        example.interaction_id: example
        for example in InstructionExample.objects.filter(interaction__in=interactions)
    }
    founder_position: dict[int, int] = {}
    shape = []
    for position, interaction in enumerate(interactions):
        example = examples[interaction.pk]
        founder = founder_position.setdefault(example.cluster, position)
        shape.append((founder, example.status, example.signal))
    return shape


@pytest.mark.django_db
def test_a_batch_clusters_as_curating_one_at_a_time_does(reviewer):
    batched, one_by_one = ProjectFactory(), ProjectFactory()
    rows = rated_interactions([batched, one_by_one], count=BATCH_SIZE, reviewer=reviewer)
    in_batch = [row[0] for row in rows]
    singly = [row[1] for row in rows]

    interactions_curate(project=batched, interaction_ids=[i.pk for i in in_batch])
    for interaction in singly:
        interactions_curate(project=one_by_one, interaction_ids=[interaction.pk])

    shape = curated_shape(in_batch)
    assert shape == curated_shape(singly)
    assert len({founder for founder, _, _ in shape}) == len(PARAPHRASES) + 4
    statuses = {status for _, status, _ in shape}
    assert statuses == {"included", "duplicate", "excluded"}
    assert_each_cluster_includes_its_best(batched)


def assert_each_cluster_includes_its_best(project) -> None:
    eligible = InstructionExample.objects.filter(
        project=project, status__in=["included", "duplicate"]
    ).order_by("cluster", "-quality", "pk")
    best_first: dict[int, list[str]] = {}
    for example in eligible:
        best_first.setdefault(example.cluster, []).append(example.status)
    for statuses in best_first.values():
        assert statuses == ["included"] + ["duplicate"] * (len(statuses) - 1)


@pytest.mark.django_db
def test_the_index_backed_search_finds_the_clusters_the_exact_one_does(monkeypatch):
    """Past EXACT_SEARCH_MAX_EXAMPLES stored examples the search goes through the HNSW index;
    on distinct questions it finds what comparing every example finds."""
    exact, indexed = ProjectFactory(), ProjectFactory()
    questions = [question for group in PARAPHRASES for question in group]
    embeddings = dict(zip(questions, embed_texts(questions), strict=True))
    for project in (exact, indexed):
        for question in questions:
            interaction = interaction_record(
                project=project,
                source=Interaction.Source.CHAT,
                messages=[{"role": "user", "content": question}],
                query_text=question,
                query_embedding=embeddings[question],
                response="See the help centre.",
            )
            rating_submit(interaction=interaction, rater_id="u", source="api", thumb="up")

    def curate_one_at_a_time(project):
        interactions = list(Interaction.objects.filter(project=project).order_by("created_at"))
        for interaction in interactions:
            interactions_curate(project=project, interaction_ids=[interaction.pk])
        return curated_shape(interactions)

    exact_shape = curate_one_at_a_time(exact)
    monkeypatch.setattr(dedupe, "EXACT_SEARCH_MAX_EXAMPLES", 0)
    assert curate_one_at_a_time(indexed) == exact_shape
    assert len({founder for founder, _, _ in exact_shape}) == len(PARAPHRASES)


@pytest.mark.django_db
def test_recurating_a_batch_updates_removes_and_keeps_examples_in_place(reviewer):
    project = ProjectFactory()
    rows = rated_interactions([project], count=60, reviewer=reviewer)
    interactions = [row[0] for row in rows]
    interactions_curate(project=project, interaction_ids=[i.pk for i in interactions])
    before = {
        example.interaction_id: (example.pk, example.cluster, example.split)
        for example in InstructionExample.objects.filter(project=project)
    }

    corrected, unrated = [i for i in interactions if not i.reviews.exists()][:2]
    rating_submit(
        interaction=corrected,
        rater_id="second",
        source="api",
        thumb="down",
        correction="Open Settings → Billing → Refunds within 14 days.",
    )
    unrated.ratings.all().delete()
    unrated.reviews.all().delete()
    summary = interactions_curate(project=project, interaction_ids=[i.pk for i in interactions])
    again = interactions_curate(project=project, interaction_ids=[i.pk for i in interactions])

    after = {
        example.interaction_id: (example.pk, example.cluster, example.split)
        for example in InstructionExample.objects.filter(project=project)
    }
    assert (summary.curated, summary.removed) == (59, 1)
    assert (again.curated, again.removed) == (59, 0)
    assert after == {pk: kept for pk, kept in before.items() if pk != unrated.pk}
    example = InstructionExample.objects.get(interaction=corrected)
    assert example.messages[-1]["content"] == "Open Settings → Billing → Refunds within 14 days."
    assert_each_cluster_includes_its_best(project)
