"""Curation does its work once per distinct question: each question is embedded once (and
again never, while the process remembers it), the near-duplicate search of a batch is one
query that finds what searching each question on its own, or comparing with every stored
example, finds, and a question asked many times is searched as one."""

import uuid

import numpy as np
import pytest
from django.db import connection, transaction

from feedback.services.ratings import rating_submit
from flywheel.ml.loading import embed_texts, load_embedder
from flywheel.models import Interaction
from flywheel.services.interactions import interaction_record
from retrain.curation import dedupe
from retrain.curation.pipeline import interactions_curate
from retrain.models import InstructionExample
from tests.factories import PARAPHRASES, ProjectFactory, served

QUESTIONS = [question for group in PARAPHRASES for question in group]


@pytest.fixture
def texts_embedded(monkeypatch) -> list[str]:
    """Every text the embedding model is asked to embed (the real model still embeds it)."""
    embedder = load_embedder()
    encode = embedder.encode
    embedded: list[str] = []

    def encode_recorded(texts, **options):
        embedded.extend(texts)
        return encode(texts, **options)

    monkeypatch.setattr(embedder, "encode", encode_recorded)
    return embedded


@pytest.mark.django_db
def test_a_question_asked_many_times_is_embedded_once(texts_embedded):
    project = ProjectFactory()
    # Never embedded before in this process: the cache cannot hold them yet.
    asked = [f"How do I export shelf {uuid.uuid4().hex[:8]}?" for _ in range(2)]
    interactions = [served(project, asked[number % 2]) for number in range(6)]
    for interaction in interactions:
        rating_submit(interaction=interaction, rater_id="u", source="api", thumb="up")

    interactions_curate(project=project, interaction_ids=[i.pk for i in interactions[:4]])
    assert sorted(texts_embedded) == sorted(asked)
    interactions_curate(project=project, interaction_ids=[i.pk for i in interactions[4:]])
    assert sorted(texts_embedded) == sorted(asked), "the second batch's questions were cached"

    vectors = {
        interaction.query_text: interaction.query_embedding
        for interaction in Interaction.objects.filter(project=project)
    }
    assert len(vectors) == 2
    for question in asked:
        np.testing.assert_allclose(vectors[question], embed_texts([question])[0], atol=1e-7)
    assert sorted(texts_embedded) == sorted(asked)


def test_the_embedding_cache_gives_what_the_model_gives(texts_embedded):
    texts = [f"Where is the bin of workspace {uuid.uuid4().hex[:8]}?", "How do I share a shelf?"]

    first = embed_texts([texts[0], texts[1], texts[0]])
    again = embed_texts(texts)

    assert texts_embedded.count(texts[0]) == 1
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(again, first[:2])
    fresh = load_embedder().encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(again, fresh, atol=1e-5)


def _stored_project(*, repeats: int):
    """A project whose examples are PARAPHRASES asked `repeats` times each, curated one
    question at a time; its stored examples' clusters by question embedding."""
    project = ProjectFactory()
    embeddings = dict(zip(QUESTIONS, embed_texts(QUESTIONS), strict=True))
    for _ in range(repeats):
        for question in QUESTIONS:
            interaction = interaction_record(
                project=project,
                source=Interaction.Source.CHAT,
                messages=[{"role": "user", "content": question}],
                query_text=question,
                query_embedding=embeddings[question],
                response=f"Answer {uuid.uuid4().hex[:6]}",  # no two exact duplicates
            )
            rating_submit(interaction=interaction, rater_id="u", source="api", thumb="up")
            interactions_curate(project=project, interaction_ids=[interaction.pk])
    return project


def _probes(project, questions: list[str]) -> list[tuple[object, str]]:
    """Interactions of `project` asking `questions` (not rated): (id, embedding as text)."""
    probes = []
    for question, vector in zip(questions, embed_texts(questions), strict=True):
        interaction = interaction_record(
            project=project,
            source=Interaction.Source.CHAT,
            messages=[{"role": "user", "content": question}],
            query_text=question,
            query_embedding=vector,
            response="",
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT query_embedding::text FROM flywheel_interaction WHERE id = %s",
                [interaction.pk],
            )
            probes.append((interaction.pk, cursor.fetchone()[0]))
    return probes


def _nearest_by_brute_force(project, probes) -> list[tuple[float, set[int]]]:
    """For each probe, the distance of the nearest stored example and the clusters of all
    stored examples at that distance (ties)."""
    examples = list(
        InstructionExample.objects.filter(project=project).values_list(
            "question_embedding", "cluster"
        )
    )
    stored = np.array([np.asarray(vector, dtype=np.float64) for vector, _ in examples])
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    clusters = np.array([cluster for _, cluster in examples])
    nearest = []
    for _, text in probes:
        probe = np.array(text[1:-1].split(","), dtype=np.float64)
        distances = 1 - stored @ (probe / np.linalg.norm(probe))
        best = distances.min()
        nearest.append((float(best), set(clusters[distances <= best + 1e-6].tolist())))
    return nearest


@pytest.mark.django_db
@pytest.mark.parametrize("search", ["exact", "index"])
def test_the_batched_search_finds_what_one_search_per_question_and_brute_force_find(
    monkeypatch, search
):
    if search == "index":
        monkeypatch.setattr(dedupe, "EXACT_SEARCH_MAX_EXAMPLES", 0)
    project = _stored_project(repeats=2)
    probes = _probes(
        project,
        [
            *QUESTIONS,  # stored: found by equality, at distance 0
            "How do I ask for my money back?",  # a paraphrase, not stored
            "Can I get a refund on the annual plan?",
            "What time zone does the calendar use?",  # nothing near
        ],
    )

    with transaction.atomic():
        _, batched = dedupe._stored_nearest(
            project_id=project.pk, questions=probes, searched=list(range(len(probes)))
        )
        one_by_one = [
            dedupe._stored_nearest(project_id=project.pk, questions=[probe], searched=[0])[1][0]
            for probe in probes
        ]

    assert batched == one_by_one
    for (cluster, distance), (best, tied_clusters) in zip(
        batched, _nearest_by_brute_force(project, probes), strict=True
    ):
        assert distance == pytest.approx(best, abs=1e-4)
        assert cluster in tied_clusters
    assert [distance for _, distance in batched[: len(QUESTIONS)]] == [0.0] * len(QUESTIONS)


@pytest.mark.django_db
def test_each_question_has_one_first_example_which_hands_its_mark_on_when_removed():
    project = _stored_project(repeats=3)
    firsts = InstructionExample.objects.filter(project=project, first_of_question=True)
    assert firsts.count() == len(QUESTIONS)
    assert InstructionExample.objects.filter(project=project).count() == 3 * len(QUESTIONS)
    first = firsts.order_by("pk").first()
    heir = (
        InstructionExample.objects.filter(
            project=project, question_embedding=first.question_embedding
        )
        .exclude(pk=first.pk)
        .order_by("pk")
        .first()
    )

    first.interaction.ratings.all().delete()
    interactions_curate(project=project, interaction_ids=[first.interaction_id])

    assert not InstructionExample.objects.filter(pk=first.pk).exists()
    heir.refresh_from_db()
    assert heir.first_of_question
    assert firsts.count() == len(QUESTIONS)
    asked_again = served(project, first.interaction.query_text, "Another answer altogether.")
    rating_submit(interaction=asked_again, rater_id="u", source="api", thumb="up")
    interactions_curate(project=project, interaction_ids=[asked_again.pk])
    example = InstructionExample.objects.get(interaction=asked_again)
    assert (example.cluster, example.first_of_question) == (heir.cluster, False)
