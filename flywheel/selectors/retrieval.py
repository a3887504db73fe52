"""Hybrid retrieval over a project's active index version.

Two retrievers run against the same chunks: pgvector's HNSW index (cosine distance) and
PostgreSQL full-text search. Their rankings are fused with Reciprocal Rank Fusion, which needs
no score calibration between the two: each list contributes 1 / (k + rank) per chunk.
Multi-query (RAG-Fusion) fuses the rankings of several phrasings; HyDE searches vectors with
the embedding of a hypothetical answer instead of the question.
"""

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from flywheel.ml.loading import embed_texts
from flywheel.models import Chunk, IndexVersion, Project

RRF_K = 60
# The HNSW candidate list; larger finds more of the true nearest neighbours, slower. 150:
# recall@10 0.965 at p95 4.7 ms over 100k chunks (100 gave 0.951, 200 0.971 at 5.5 ms;
# bench/retrieval.py, figures in bench/README.md).
HNSW_EF_SEARCH = 150
# A query term that at most this many chunks of an index version hold is rare: all its rows
# are keyword candidates. Rows holding the common terms are taken up to this many. 100 kept
# hybrid p95 under 10 ms over 100k chunks; 500 found one needle more of 100 at 11 ms, 2,000
# none more at 30 ms (bench/retrieval.py, figures in bench/README.md).
KEYWORD_RARE_TERM_ROWS = 100
# At most this many rows from rare terms are ranked (the rarest terms first).
KEYWORD_CANDIDATE_ROWS = 2000
# A pasted paragraph is searched by its first terms.
KEYWORD_QUERY_TERMS = 32
# The AND fallback takes rows holding all of the query's first few common terms. Letting a row
# lack one (a question often holds a common word its passage does not) ranked the passage
# sought lower on bench/retrieval.py's needle set, so it lacks none.
KEYWORD_FALLBACK_MAY_LACK = 0
KEYWORD_FALLBACK_TERMS = 8


class RetrievalMode(StrEnum):
    HYBRID = "hybrid"
    VECTOR = "vector"
    KEYWORD = "keyword"


@dataclass(frozen=True)
class RetrievalOptions:
    top_k: int = 4
    mode: RetrievalMode = RetrievalMode.HYBRID
    # Chunks whose metadata contains these key/value pairs (JSON containment).
    filters: dict | None = None
    # Number of generated rephrasings to fuse in (RAG-Fusion); 0 is off.
    query_variants: int = 0
    hyde: bool = False


@dataclass
class RetrievedChunk:
    chunk_id: int
    document_id: int | None
    kind: str
    title: str
    source_uri: str
    heading: str
    text: str
    score: float  # fused RRF score (or the single retriever's score)
    rank: int
    vector_similarity: float | None = None
    keyword_score: float | None = None
    review_id: int | None = None  # an FAQ entry's approved correction

    def as_log_entry(self, *, index_version_id: int) -> dict:
        return {
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "kind": self.kind,
            "title": self.title,
            "source_uri": self.source_uri,
            "heading": self.heading,
            "text": self.text,
            "score": round(self.score, 6),
            "rank": self.rank,
            "vector_similarity": _rounded(self.vector_similarity),
            "keyword_score": _rounded(self.keyword_score),
            "index_version_id": index_version_id,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass
class RetrievalResult:
    index_version: IndexVersion | None
    chunks: list[RetrievedChunk]
    query_embedding: np.ndarray | None
    queries: list[str]
    hypothetical_answer: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


# (chunk id, score), best first
Ranking = list[tuple[int, float]]


def active_index_version(*, project: Project) -> IndexVersion | None:
    return IndexVersion.objects.filter(project=project, status=IndexVersion.Status.ACTIVE).first()


def _metadata_clause(filters: dict | None) -> tuple[str, list]:
    if not filters:
        return "", []
    import json

    return " AND metadata @> %s::jsonb", [json.dumps(filters)]


def vector_ranking(
    *, index_version_id: int, embedding: np.ndarray, limit: int, filters: dict | None = None
) -> Ranking:
    where, params = _metadata_clause(filters)
    vector = "[" + ",".join(f"{value:.7f}" for value in embedding) + "]"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL hnsw.ef_search = {max(HNSW_EF_SEARCH, limit)}")
        # With a filter, keep scanning the graph until enough rows pass it (pgvector ≥ 0.8).
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute(
            "SELECT id, 1 - (embedding <=> %s::vector) AS similarity FROM flywheel_chunk "
            f"WHERE index_version_id = %s{where} "
            "ORDER BY embedding <=> %s::vector LIMIT %s",
            [vector, index_version_id, *params, vector, limit],
        )
        rows = cursor.fetchall()
    # relaxed_order may return neighbours slightly out of order.
    return sorted(((row[0], float(row[1])) for row in rows), key=lambda item: -item[1])


def query_terms_counted(*, query: str, index_version_id: int) -> list[tuple[str, int]]:
    """The query's distinct lexemes as PostgreSQL's English configuration makes them (stemmed,
    stop words left out), in the order they first appear (at most KEYWORD_QUERY_TERMS), each
    with the number of the index version's chunks that hold it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT query.lexeme, coalesce(term.chunks, 0) "
            "FROM unnest(to_tsvector('english', %s)) AS query "
            "LEFT JOIN flywheel_chunkterm AS term "
            "ON term.index_version_id = %s AND term.lexeme = query.lexeme "
            "ORDER BY query.positions[1] LIMIT %s",
            [query, index_version_id, KEYWORD_QUERY_TERMS],
        )
        return [(row[0], row[1]) for row in cursor.fetchall()]


def _tsquery(terms: list[str], *, operator: str = "&") -> str:
    """Lexemes joined by `operator` in tsquery syntax, each quoted so that none is parsed
    (or stemmed) again."""
    quoted = ("'" + term.replace("\\", "\\\\").replace("'", "''") + "'" for term in terms)
    return f" {operator} ".join(quoted)


def _fallback_tsqueries(common: list[str], *, may_lack: int) -> list[str]:
    """The AND fallback over the first KEYWORD_FALLBACK_TERMS common terms, as tsqueries:
    rows holding all of them, then (each its own query, so that rows lacking more never
    crowd out rows lacking fewer) rows lacking one of them, two, up to `may_lack`, never
    holding fewer than two unless there is only one."""
    common = common[:KEYWORD_FALLBACK_TERMS]
    if not common:
        return []
    fewest = max(len(common) - may_lack, min(2, len(common)))
    return [
        " | ".join(f"({_tsquery(list(terms))})" for terms in itertools.combinations(common, held))
        for held in range(len(common), fewest - 1, -1)
    ]


def _rarest_terms(rare: list[tuple[str, int]]) -> list[str]:
    """The rare terms whose rows are taken, rarest first, up to KEYWORD_CANDIDATE_ROWS rows
    (the rarest term's whatever their number)."""
    taken: list[str] = []
    rows = 0
    for term, chunks in sorted(rare, key=lambda item: item[1]):
        if taken and rows + chunks > KEYWORD_CANDIDATE_ROWS:
            break
        taken.append(term)
        rows += chunks
    return taken


def keyword_ranking(
    *,
    index_version_id: int,
    query: str,
    limit: int,
    filters: dict | None = None,
    rare_term_rows: int = KEYWORD_RARE_TERM_ROWS,
    fallback_may_lack: int = KEYWORD_FALLBACK_MAY_LACK,
) -> Ranking:
    """Full-text ranking by cover density (ts_rank_cd) over a bounded set of candidates.

    Any query term may match (a natural-language question rarely has every word in its
    passage), but ranking every row that matches any term costs in proportion to the matches:
    one common word matches a third of a large index. So, from the term counts that
    flywheel_chunkterm keeps, the candidates are
    - the rows holding a rare term, one that at most `rare_term_rows` chunks of the index
      version hold (the rarest terms first, up to KEYWORD_CANDIDATE_ROWS rows), and
    - up to `rare_term_rows` rows holding every common term (the AND fallback, which answers
      a query made only of common words; `fallback_may_lack` adds rows lacking that many),
    and they are ranked against all the query's terms, as if any term could match. The cost
    is bounded by those two numbers, not by the size of the index.
    """
    counted = [
        (term, chunks)
        for term, chunks in query_terms_counted(query=query, index_version_id=index_version_id)
        if chunks
    ]
    rare = _rarest_terms([(term, chunks) for term, chunks in counted if chunks <= rare_term_rows])
    common = [term for term, chunks in counted if chunks > rare_term_rows]
    where, filter_params = _metadata_clause(filters)
    matching = (
        "(SELECT id FROM flywheel_chunk "
        f"WHERE index_version_id = %s AND search_vector @@ %s::tsquery{where} LIMIT %s)"
    )
    parts, params = [], []
    if rare:
        parts.append(matching)
        params += [
            index_version_id,
            _tsquery(rare, operator="|"),
            *filter_params,
            KEYWORD_CANDIDATE_ROWS,
        ]
    for fallback in _fallback_tsqueries(common, may_lack=fallback_may_lack):
        parts.append(matching)
        params += [index_version_id, fallback, *filter_params, rare_term_rows]
    if not parts:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH candidate AS ({' UNION '.join(parts)}) "
            "SELECT chunk.id, ts_rank_cd(chunk.search_vector, %s::tsquery, 32) AS score "
            "FROM flywheel_chunk AS chunk JOIN candidate USING (id) "
            "ORDER BY score DESC, chunk.id LIMIT %s",
            [*params, _tsquery([term for term, _ in counted], operator="|"), limit],
        )
        return [(row[0], float(row[1])) for row in cursor.fetchall()]


def reciprocal_rank_fusion(
    rankings: list[Ranking], *, k: int = RRF_K, tie_breaker: dict[int, float] | None = None
) -> Ranking:
    """Fuse rankings; equal fused scores (say, first in one list, absent from the other)
    are ordered by `tie_breaker` (higher first), then by id so the order is stable."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for position, (chunk_id, _) in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + position)
    tie_breaker = tie_breaker or {}
    return sorted(
        fused.items(),
        key=lambda item: (-round(item[1], 12), -tie_breaker.get(item[0], -1.0), item[0]),
    )


def _source_uri(chunk: Chunk) -> str:
    """Where a passage comes from: its document, or for an approved correction `faq:<review>`."""
    if chunk.document:
        return chunk.document.source_uri
    return f"faq:{chunk.review_id}" if chunk.review_id else ""


def _chunks_by_id(ids: list[int]) -> dict[int, Chunk]:
    return {
        chunk.pk: chunk for chunk in Chunk.objects.filter(pk__in=ids).select_related("document")
    }


def retrieve(
    *,
    project: Project,
    query: str,
    options: RetrievalOptions,
    index_version: IndexVersion | None = None,
    write_text: Callable[[str, int], str] | None = None,
    embedding_model: str | None = None,
) -> RetrievalResult:
    """Retrieve the `top_k` chunks for `query`.

    `write_text(prompt, max_tokens)` is the generator, needed only for query variants and HyDE.
    The query is embedded by the model that embedded the index version (a fine-tuned
    retriever once one is promoted), unless `embedding_model` names another.
    """
    index_version = index_version or active_index_version(project=project)
    if embedding_model is None and index_version is not None and index_version.embedding_model:
        embedding_model = index_version.embedding_model
    timings: dict[str, float] = {}
    queries = [query]
    hypothetical_answer = None

    if (options.query_variants or options.hyde) and write_text is None:
        raise ValueError("query variants and HyDE need a generator")
    started = time.perf_counter()
    if options.query_variants:
        assert write_text is not None  # checked above
        queries += query_variants_write(
            query=query, count=options.query_variants, write_text=write_text
        )
    if options.hyde:
        assert write_text is not None  # checked above
        hypothetical_answer = write_text(
            "Write a short factual passage that answers the question.\n\n"
            f"Question: {query}\nPassage:",
            96,
        )
    if options.query_variants or options.hyde:
        timings["rewrite_ms"] = (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    texts_to_embed = list(queries) + ([hypothetical_answer] if hypothetical_answer else [])
    embeddings = embed_texts(
        texts_to_embed, path=Path(embedding_model) if embedding_model else None
    )
    timings["embed_ms"] = (time.perf_counter() - started) * 1000
    query_embedding = embeddings[0]

    if index_version is None:
        return RetrievalResult(
            index_version=None,
            chunks=[],
            query_embedding=query_embedding,
            queries=queries,
            hypothetical_answer=hypothetical_answer,
            timings_ms=timings,
        )

    started = time.perf_counter()
    candidates = max(settings.FLYWHEEL_RETRIEVAL_CANDIDATES, options.top_k)
    vector_queries = [embeddings[-1]] if hypothetical_answer else list(embeddings[: len(queries)])
    similarities: dict[int, float] = {}
    keyword_scores: dict[int, float] = {}
    rankings: list[Ranking] = []
    if options.mode in (RetrievalMode.HYBRID, RetrievalMode.VECTOR):
        for embedding in vector_queries:
            ranking = vector_ranking(
                index_version_id=index_version.pk,
                embedding=embedding,
                limit=candidates,
                filters=options.filters,
            )
            rankings.append(ranking)
            for chunk_id, similarity in ranking:
                similarities[chunk_id] = max(similarity, similarities.get(chunk_id, -1.0))
    if options.mode in (RetrievalMode.HYBRID, RetrievalMode.KEYWORD):
        for text in queries:
            ranking = keyword_ranking(
                index_version_id=index_version.pk,
                query=text,
                limit=candidates,
                filters=options.filters,
            )
            rankings.append(ranking)
            for chunk_id, score in ranking:
                keyword_scores[chunk_id] = max(score, keyword_scores.get(chunk_id, 0.0))

    fused = (
        rankings[0]
        if len(rankings) == 1
        else reciprocal_rank_fusion(rankings, tie_breaker=similarities)
    )
    top = fused[: options.top_k]
    chunks = _chunks_by_id([chunk_id for chunk_id, _ in top])
    retrieved = []
    for rank, (chunk_id, score) in enumerate(top, start=1):
        chunk = chunks[chunk_id]
        retrieved.append(
            RetrievedChunk(
                chunk_id=chunk_id,
                document_id=chunk.document_id,
                kind=chunk.kind,
                title=chunk.document.title if chunk.document else chunk.heading,
                source_uri=_source_uri(chunk),
                heading=chunk.heading,
                text=chunk.text,
                score=score,
                rank=rank,
                vector_similarity=similarities.get(chunk_id),
                keyword_score=keyword_scores.get(chunk_id),
                review_id=chunk.review_id,
            )
        )
    timings["retrieve_ms"] = (time.perf_counter() - started) * 1000
    return RetrievalResult(
        index_version=index_version,
        chunks=retrieved,
        query_embedding=query_embedding,
        queries=queries,
        hypothetical_answer=hypothetical_answer,
        timings_ms=timings,
    )


def query_variants_write(
    *, query: str, count: int, write_text: Callable[[str, int], str]
) -> list[str]:
    """Ask the generator for `count` rephrasings, one per line; keep the distinct ones."""
    prompt = (
        f"Rewrite the question below in {count} different ways, one per line, "
        f"without numbering.\n\nQuestion: {query}"
    )
    variants = []
    for line in write_text(prompt, 32 * count).splitlines():
        cleaned = line.strip().lstrip("-*0123456789.) ").strip()
        if cleaned and cleaned.lower() != query.lower() and cleaned not in variants:
            variants.append(cleaned)
    return variants[:count]
