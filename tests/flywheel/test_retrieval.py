"""Hybrid retrieval against the real embedding model and PostgreSQL full-text search."""

import json

import pytest

from flywheel.models import IndexVersion
from flywheel.selectors.retrieval import (
    RetrievalMode,
    RetrievalOptions,
    reciprocal_rank_fusion,
    retrieve,
)
from tests.conftest import index_folder
from tests.factories import LABELLED_SET, ProjectFactory


def _hits(project, queries, *, mode: RetrievalMode, top_k: int) -> dict[str, bool]:
    hits = {}
    for item in queries:
        result = retrieve(
            project=project, query=item["query"], options=RetrievalOptions(top_k=top_k, mode=mode)
        )
        hits[item["query"]] = item["source"] in {chunk.source_uri for chunk in result.chunks}
    return hits


@pytest.mark.django_db
def test_hybrid_finds_what_vector_or_keyword_search_alone_misses():
    project = ProjectFactory()
    index_folder(project, LABELLED_SET)
    queries = [json.loads(line) for line in (LABELLED_SET / "queries.jsonl").open()]

    by_mode = {mode: _hits(project, queries, mode=mode, top_k=2) for mode in RetrievalMode}
    hybrid, vector, keyword = (by_mode[m] for m in ("hybrid", "vector", "keyword"))

    missed_by_vector = [q for q in hybrid if hybrid[q] and not vector[q]]
    missed_by_keyword = [q for q in hybrid if hybrid[q] and not keyword[q]]
    assert missed_by_vector, "a lexical query (an error code) only full-text search catches"
    assert missed_by_keyword, "a paraphrase that shares no word with its passage"
    assert sum(hybrid.values()) >= max(sum(vector.values()), sum(keyword.values()))


@pytest.mark.django_db
def test_results_carry_ranks_scores_titles_and_respect_top_k_and_filters():
    project = ProjectFactory()
    index_folder(project, LABELLED_SET)
    from flywheel.models import Chunk

    Chunk.objects.filter(project=project, document__source_uri="plans.md").update(
        metadata={"section": "billing"}
    )

    result = retrieve(
        project=project, query="How much does Grove cost?", options=RetrievalOptions(top_k=3)
    )
    assert [chunk.rank for chunk in result.chunks] == [1, 2, 3]
    assert result.chunks[0].title == "Plans"
    assert result.chunks[0].score >= result.chunks[1].score >= result.chunks[2].score
    assert result.chunks[0].vector_similarity is not None
    assert result.index_version.status == IndexVersion.Status.ACTIVE

    filtered = retrieve(
        project=project,
        query="How do I get a refund?",
        options=RetrievalOptions(top_k=5, filters={"section": "billing"}),
    )
    assert {chunk.source_uri for chunk in filtered.chunks} == {"plans.md"}


@pytest.mark.django_db
def test_retrieval_reads_only_the_active_index_version_of_its_own_project():
    project, other = ProjectFactory(), ProjectFactory()
    index_folder(project, LABELLED_SET)
    index_folder(other, LABELLED_SET)
    first = IndexVersion.objects.get(project=project)
    IndexVersion.objects.filter(pk=first.pk).update(status=IndexVersion.Status.RETIRED)
    empty = IndexVersion.objects.create(
        project=project,
        number=2,
        status=IndexVersion.Status.ACTIVE,
        embedding_model=first.embedding_model,
    )

    result = retrieve(project=project, query="E-2218", options=RetrievalOptions())

    assert result.index_version == empty
    assert result.chunks == []


def test_reciprocal_rank_fusion_rewards_agreement_and_breaks_ties_by_similarity():
    vector = [(1, 0.9), (2, 0.8), (3, 0.7)]
    keyword = [(4, 5.0), (2, 3.0)]

    fused = reciprocal_rank_fusion([vector, keyword], tie_breaker={1: 0.9, 4: 0.1})

    assert [chunk_id for chunk_id, _ in fused] == [2, 1, 4, 3]
