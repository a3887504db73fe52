"""Near-duplicate clustering of examples by the cosine similarity of their questions: each
cluster's best-rated member is its representative, the only one that enters datasets."""

import functools
import math

import numpy as np
from django.db import connection

from flywheel.models import Interaction
from retrain.curation.examples import CuratedExample, StoredExample
from retrain.curation.split import split_for_cluster
from retrain.models import CurationPolicy, InstructionExample

Status = InstructionExample.Status

# The HNSW candidate list of the near-duplicate search: the default 40 misses the true
# nearest question more often; larger is slower.
NEAR_DUPLICATE_EF_SEARCH = 100


# Up to this many first examples of their question (one per distinct question), a
# near-duplicate search compares the question with every one of them (exact, and cheap); past
# it, it goes through the HNSW index, approximately.
EXACT_SEARCH_MAX_EXAMPLES = 500


SIMILARITY_BLOCK_ROWS = 512  # new examples compared with each other per matrix product


def clusters_assign(
    *, project_id: int, examples: list[CuratedExample], policy: CurationPolicy
) -> None:
    """Give each new example, in order, its id, its cluster and its split. The cluster is an
    exact duplicate's (same content hash), else that of the nearest question within the
    policy's threshold, among the stored examples and the new ones before it; else a cluster
    of its own, named by the example's id. The first new example of a question embedding no
    stored example has is marked the first of its question."""
    if not examples:
        return
    for example, example_id in zip(examples, _example_ids_reserve(len(examples)), strict=True):
        example.pk = example_id
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON (content_hash) content_hash, cluster "
            f"FROM {InstructionExample._meta.db_table} "
            "WHERE project_id = %s AND content_hash = ANY(%s) ORDER BY content_hash, id",
            [project_id, list({example.content_hash for example in examples})],
        )
        stored_cluster_by_hash = dict(cursor.fetchall())
    first_position_by_hash: dict[str, int] = {}
    searched = []  # positions of the examples with no exact duplicate
    for position, example in enumerate(examples):
        if example.content_hash in stored_cluster_by_hash:
            continue
        if example.content_hash not in first_position_by_hash:
            first_position_by_hash[example.content_hash] = position
            searched.append(position)
    stored_questions, stored_nearest = _stored_nearest(
        project_id=project_id,
        questions=[(example.interaction_id, example.question_embedding) for example in examples],
        searched=searched,
    )
    vectors = {
        embedding: _vector_parse(embedding)
        for embedding in {example.question_embedding for example in examples}
    }
    earlier_nearest = _earlier_nearest(
        np.array([vectors[example.question_embedding] for example in examples], dtype=np.float64),
        positions=searched,
    )
    candidates = dict(zip(searched, zip(stored_nearest, earlier_nearest, strict=True), strict=True))
    max_distance = 1 - policy.near_duplicate_threshold
    for position, example in enumerate(examples):
        if example.content_hash in stored_cluster_by_hash:
            example.cluster = stored_cluster_by_hash[example.content_hash]
        elif first_position_by_hash[example.content_hash] < position:
            example.cluster = examples[first_position_by_hash[example.content_hash]].cluster
        else:
            (stored_cluster, stored_distance), (earlier, earlier_distance) = candidates[position]
            if min(stored_distance, earlier_distance) > max_distance:
                example.cluster = example.pk
            elif stored_distance <= earlier_distance:
                # A finite distance: there is a stored example, hence its cluster.
                assert stored_cluster is not None
                example.cluster = stored_cluster
            else:
                example.cluster = examples[earlier].cluster
        example.split = split_for_cluster(
            project_id=project_id, cluster=example.cluster, eval_fraction=policy.eval_fraction
        )
        if example.question_embedding not in stored_questions:
            example.first_of_question = True
            stored_questions.add(example.question_embedding)


# Question embeddings parsed, across batches: popular questions come back in every batch.
PARSED_VECTORS_CACHE_SIZE = 5_000


@functools.lru_cache(maxsize=PARSED_VECTORS_CACHE_SIZE)
def _vector_parse(text: str) -> np.ndarray:
    """pgvector's text form as the vector field reads it (float32); not to be modified."""
    return np.fromstring(text[1:-1], dtype=np.float64, sep=",").astype(np.float32)


def _stored_nearest(
    *, project_id: int, questions: list[tuple[object, str]], searched: list[int]
) -> tuple[set[str], list[tuple[int | None, float]]]:
    """Of `questions`, (interaction id, its question embedding in pgvector's text form): the
    embeddings that a stored example is the first of, and for the question at each of
    `searched`, the cluster of the project's nearest stored question and its cosine distance
    ((None, inf) with none stored); in one query for all of them, one row per distinct
    embedding.

    Only the first example of each question is searched (`first_of_question`): the nearest of
    them is as near as the nearest example, and a question asked a thousand times is one
    candidate, not a thousand. A stored copy of the very question is found by equality, at
    distance 0. Other questions are compared with every first example up to
    EXACT_SEARCH_MAX_EXAMPLES of them; past that, the HNSW index finds the nearest
    approximately.
    """
    searched_embeddings = {questions[position][1] for position in searched}
    interaction_by_embedding: dict[str, object] = {}
    for interaction_id, embedding in questions:
        interaction_by_embedding.setdefault(embedding, interaction_id)
    embeddings = list(interaction_by_embedding)
    first_examples = InstructionExample.objects.filter(
        project_id=project_id, first_of_question=True
    )
    exact = not first_examples[EXACT_SEARCH_MAX_EXAMPLES:].exists()
    distance = "example.question_embedding <=> interaction.query_embedding"
    with connection.cursor() as cursor:
        if not exact:
            # Strict order: the first row the index returns is the nearest, and the scan goes
            # on past other projects' examples until it finds one of this project.
            cursor.execute(f"SET LOCAL hnsw.ef_search = {NEAR_DUPLICATE_EF_SEARCH}")
            cursor.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            # While a project grows (a first curation of its history), its statistics still
            # say it is small, and the planner would sort all its examples by distance for
            # every question: quadratic. Without a sort, only the HNSW index gives the order.
            cursor.execute("SET LOCAL enable_sort = off")
        table = InstructionExample._meta.db_table
        cursor.execute(
            "SELECT candidate.position, same.cluster, nearest.cluster, nearest.distance "
            "FROM unnest(%s::uuid[], %s::boolean[]) WITH ORDINALITY "
            "AS candidate(interaction_id, searched, position) "
            f"JOIN {Interaction._meta.db_table} AS interaction "
            "ON interaction.id = candidate.interaction_id "
            f"LEFT JOIN LATERAL (SELECT example.cluster FROM {table} AS example "
            "WHERE example.project_id = %s AND example.first_of_question "
            "AND example.question_embedding = interaction.query_embedding "
            # A limit keeps it a lookup per candidate: flattened into a join, it would compare
            # every candidate with every first example while the project's statistics are stale.
            "LIMIT 1) AS same ON true "
            f"LEFT JOIN LATERAL (SELECT example.cluster, {distance} AS distance "
            f"FROM {table} AS example "
            "WHERE candidate.searched AND same.cluster IS NULL "
            "AND example.project_id = %s AND example.first_of_question "
            # Adding zero hides the order from the HNSW index: every example is compared.
            f"ORDER BY {f'({distance}) + 0' if exact else distance} LIMIT 1) AS nearest ON true",
            [
                [interaction_by_embedding[embedding] for embedding in embeddings],
                [embedding in searched_embeddings for embedding in embeddings],
                project_id,
                project_id,
            ],
        )
        rows = cursor.fetchall()
        if not exact:
            cursor.execute("SET LOCAL enable_sort = on")  # the rest of the transaction sorts
    stored_questions = set()
    found: dict[str, tuple[int | None, float]] = {}
    for position, same_cluster, nearest_cluster, nearest_distance in rows:
        embedding = embeddings[position - 1]
        if same_cluster is not None:
            stored_questions.add(embedding)
            found[embedding] = (same_cluster, 0.0)
        elif nearest_cluster is not None:
            found[embedding] = (nearest_cluster, nearest_distance)
    nearest = [found.get(questions[position][1], (None, math.inf)) for position in searched]
    return stored_questions, nearest


def _earlier_nearest(embeddings: np.ndarray, *, positions: list[int]) -> list[tuple[int, float]]:
    """For the row at each of `positions`, the most similar row before it and its cosine
    distance ((-1, inf) for row 0). Blocks of rows keep the similarity matrix small."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.where(norms > 0, norms, 1)  # a zero vector then matches nothing
    nearest: list[tuple[int, float]] = []
    for start in range(0, len(positions), SIMILARITY_BLOCK_ROWS):
        rows = np.array(positions[start : start + SIMILARITY_BLOCK_ROWS])
        similarity = unit[rows] @ unit[: rows.max() + 1].T
        similarity[np.arange(similarity.shape[1]) >= rows[:, None]] = -np.inf
        best = similarity.argmax(axis=1)
        for row, column in zip(range(len(rows)), best, strict=True):
            value = similarity[row, column]
            nearest.append((int(column), 1 - float(value)) if value > -np.inf else (-1, math.inf))
    return nearest


def representatives_elect(
    *,
    project_id: int,
    touched: list[CuratedExample],
    removed: list[StoredExample],
    founded: set[int],
    included_before: set[int],
) -> tuple[list[int], set[int]]:
    """Set the status of this batch's eligible examples: the best of each cluster (highest
    quality, then the lowest id) is included, the others are duplicates.

    Between batches, each cluster with an eligible example has exactly one included, its
    best. Where this batch left that one alone, the new best is either it or one of the
    examples this batch touched, so the stored duplicates need not be read. Returns the ids of
    the stored representatives that lost, and the clusters where this does not hold (their
    included example was touched or removed, or they have none or several), to be elected
    again from all their members once the batch is written.
    """
    changed: list[CuratedExample | StoredExample] = [*touched, *removed]
    clusters = {example.cluster for example in changed}
    untouched_representatives: dict[int, list[tuple[int, int]]] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT cluster, id, quality FROM {InstructionExample._meta.db_table} "
            "WHERE project_id = %s AND status = %s AND cluster = ANY(%s) "
            "AND id <> ALL(%s)",  # the touched or removed ones
            [project_id, Status.INCLUDED, list(clusters), list(included_before)],
        )
        for cluster, pk, quality in cursor.fetchall():
            untouched_representatives.setdefault(cluster, []).append((pk, quality))
    disturbed = {example.cluster for example in changed if example.pk in included_before}
    eligible: dict[int, list[CuratedExample]] = {}
    for example in touched:
        if example.status == Status.INCLUDED:  # a decision includes or excludes, never more
            eligible.setdefault(example.cluster, []).append(example)
    outvoted: list[int] = []
    clusters_to_reelect: set[int] = set()
    for cluster in clusters:
        kept = untouched_representatives.get(cluster, [])
        if cluster in disturbed or len(kept) > 1 or (not kept and cluster not in founded):
            clusters_to_reelect.add(cluster)
            continue
        contenders = [(-quality, pk) for pk, quality in kept]
        contenders += [(-example.quality, example.pk) for example in eligible.get(cluster, [])]
        if not contenders:
            continue
        best = min(contenders)[1]
        for example in eligible.get(cluster, []):
            example.status = Status.INCLUDED if example.pk == best else Status.DUPLICATE
        outvoted += [pk for pk, _ in kept if pk != best]
    return outvoted, clusters_to_reelect


def clusters_reelect(*, project_id: int, clusters: set[int]) -> None:
    """Elect each cluster's representative again from all its eligible members."""
    if not clusters:
        return
    eligible = InstructionExample.objects.filter(
        project_id=project_id, cluster__in=clusters, status__in=[Status.INCLUDED, Status.DUPLICATE]
    )
    best = eligible.order_by("cluster", "-quality", "pk").distinct("cluster").values("pk")
    eligible.filter(status=Status.INCLUDED).exclude(pk__in=best).update(status=Status.DUPLICATE)
    eligible.filter(status=Status.DUPLICATE, pk__in=best).update(status=Status.INCLUDED)


def _example_ids_reserve(count: int) -> list[int]:
    """Ids drawn from the table's own sequence, ahead of the insert: a new example that
    founds a cluster names the cluster by its id, and one insert then writes it whole."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [InstructionExample._meta.db_table, count],
        )
        return sorted(row[0] for row in cursor.fetchall())
