"""Turn rated and reviewed interactions into instruction examples.

For each interaction: decide from its current ratings and latest review what the policy makes
of it, build the example exactly as the model was prompted when serving (system prompt and
retrieved context included, RAFT-style), scrub PII, and place it in a near-duplicate cluster.
The cluster decides two things: its best-rated member is the only one that enters datasets,
and its split (train or eval) is a stable function of the cluster, so no paraphrase of an
eval question is ever trained on.

Curation of a project runs under a PostgreSQL advisory lock: concurrent workers take turns,
and re-curating an interaction updates its one example, so running anything twice creates
nothing twice.
"""

import hashlib
import math
import re
from dataclasses import dataclass, field

import numpy as np
from django.db import connection, transaction
from django.db.models import Exists, F, Max, OuterRef, Prefetch, Q
from django.utils import timezone

from feedback.models import Interaction, Rating, Review
from flywheel.ml.loading import embed_texts
from flywheel.models import Project
from flywheel.services.chat import prompt_messages_build
from retrain.models import CurationPolicy, InstructionExample

Signal = InstructionExample.Signal
Status = InstructionExample.Status

QUALITY = {
    Signal.REVIEWER_CORRECTION: 50,
    Signal.REVIEWER_APPROVED: 40,
    Signal.USER_CORRECTION: 30,
    Signal.THUMBS_UP: 20,
    Signal.HIGH_SCORE: 10,
    Signal.NONE: 0,
    Signal.NEGATIVE: -10,
}
LOW_SCORE_MAX = 2
CURATION_LOCK_NAMESPACE = 7_340_001  # first key of pg_advisory_xact_lock(int, int)
WRITE_BATCH_SIZE = 500  # rows per INSERT or UPDATE statement
# What re-curating rewrites in one bulk update; the status follows the election.
RECURATED_FIELDS = [
    "signal", "exclusion_reason", "messages", "rejected_answer", "rating", "review",
    "content_hash", "question_embedding", "quality", "curated_at", "split",
]  # fmt: skip
# The HNSW candidate list of the near-duplicate search: the default 40 misses the true
# nearest question more often; larger is slower.
NEAR_DUPLICATE_EF_SEARCH = 100
# Up to this many stored examples, a near-duplicate search compares the question with every
# one of them (exact, and cheap); past it, it goes through the HNSW index.
EXACT_SEARCH_MAX_EXAMPLES = 2_000
SIMILARITY_BLOCK_ROWS = 512  # new examples compared with each other per matrix product


def curation_policy_get(*, project: Project) -> CurationPolicy:
    policy, _ = CurationPolicy.objects.get_or_create(project=project)
    return policy


@dataclass
class CurationDecision:
    status: str
    signal: str
    target: str  # the answer to train on (for a negative one: the answer that was bad)
    exclusion_reason: str = ""
    rejected_answer: str = ""
    rating: Rating | None = None
    review: Review | None = None

    @property
    def quality(self) -> int:
        return QUALITY[self.signal]


def _excluded(signal: str, reason: str, target: str, **provenance) -> CurationDecision:
    return CurationDecision(
        status=Status.EXCLUDED, signal=signal, target=target, exclusion_reason=reason,
        **provenance,
    )  # fmt: skip


def curation_decide(
    *, interaction: Interaction, ratings: list[Rating], review: Review | None,
    policy: CurationPolicy,
) -> CurationDecision:  # fmt: skip
    """What the policy makes of an interaction. A review outranks end-user ratings."""
    answer = interaction.response
    decision = _decide_by_signal(answer=answer, ratings=ratings, review=review, policy=policy)
    if decision.status != Status.INCLUDED:
        return decision
    if len(interaction.query_text) > policy.max_question_chars:
        return _excluded(decision.signal, "question too long", decision.target)
    if not policy.min_answer_chars <= len(decision.target) <= policy.max_answer_chars:
        return _excluded(decision.signal, "answer length outside the policy", decision.target)
    return decision


def _decide_by_signal(*, answer, ratings, review, policy) -> CurationDecision:
    if review is not None:
        if review.decision == Review.Decision.REJECTED:
            return _excluded(Signal.NEGATIVE, "rejected by a reviewer", answer, review=review)
        if review.decision == Review.Decision.CORRECTED:
            if not policy.prefer_corrections:
                return _excluded(Signal.NEGATIVE, "corrections not used by the policy", answer,
                                 review=review)  # fmt: skip
            return CurationDecision(
                status=Status.INCLUDED, signal=Signal.REVIEWER_CORRECTION,
                target=review.ideal_answer, rejected_answer=answer, review=review,
            )  # fmt: skip
        if policy.include_reviewer_approved:
            return CurationDecision(
                status=Status.INCLUDED, signal=Signal.REVIEWER_APPROVED, target=answer,
                review=review,
            )  # fmt: skip
        return _excluded(Signal.NONE, "approvals not used by the policy", answer, review=review)

    corrections = [r for r in ratings if r.correction.strip()]
    if corrections and policy.prefer_corrections:
        latest = max(corrections, key=lambda r: r.updated_at)
        return CurationDecision(
            status=Status.INCLUDED, signal=Signal.USER_CORRECTION,
            target=latest.correction.strip(), rejected_answer=answer, rating=latest,
        )  # fmt: skip
    ups = [r for r in ratings if r.thumb == "up"]
    downs = [r for r in ratings if r.thumb == "down"]
    scores = [r.score for r in ratings if r.score is not None]
    mean_score = sum(scores) / len(scores) if scores else None
    if len(downs) > len(ups) and policy.exclude_thumbs_down_without_correction:
        return _excluded(Signal.NEGATIVE, "thumbs down without a correction", answer,
                         rating=downs[-1])  # fmt: skip
    if len(ups) > len(downs) and policy.include_thumbs_up:
        return CurationDecision(
            status=Status.INCLUDED, signal=Signal.THUMBS_UP, target=answer, rating=ups[-1]
        )
    if mean_score is not None and policy.min_score and mean_score >= policy.min_score:
        best = max((r for r in ratings if r.score is not None), key=lambda r: r.score)
        return CurationDecision(
            status=Status.INCLUDED, signal=Signal.HIGH_SCORE, target=answer, rating=best
        )
    if mean_score is not None and mean_score <= LOW_SCORE_MAX:
        return _excluded(Signal.NEGATIVE, "low score", answer)
    return _excluded(Signal.NONE, "no qualifying signal", answer)


def _served_passages(interaction: Interaction) -> list[dict] | None:
    """The context the model saw: None when retrieval was off for this interaction."""
    served_by_us = interaction.source == Interaction.Source.CHAT
    rag_on = interaction.metadata.get("flywheel", {}).get("rag", True)
    if served_by_us:
        return interaction.retrieved if rag_on else None
    return interaction.retrieved or None


def _scrubber(policy: CurationPolicy):
    if not policy.scrub_pii:
        return lambda text: text
    # Imported here: name detection loads a language model, which only curation needs.
    from retrain.pii import pii_scrub

    return pii_scrub


def example_messages_build(
    *, interaction: Interaction, target: str, policy: CurationPolicy
) -> list[dict]:
    """Prompt as served plus the target answer; user and assistant turns PII-scrubbed (the
    system prompt and the knowledge-base context are ours, not the user's)."""
    scrub = _scrubber(policy)
    prompt = prompt_messages_build(
        project=interaction.project,
        messages=interaction.messages,
        passages=_served_passages(interaction),
    )
    scrubbed = [
        message
        if message["role"] == "system"
        else {**message, "content": scrub(message["content"])}
        for message in prompt
    ]
    return [*scrubbed, {"role": "assistant", "content": scrub(target)}]


_WHITESPACE = re.compile(r"\s+")


def example_content_hash(messages: list[dict]) -> str:
    """Equal for examples that say the same thing: the conversation turns and the answer,
    lower-cased with whitespace collapsed (the system prompt is left out)."""
    turns = [
        f"{m['role']}:{_WHITESPACE.sub(' ', m['content']).strip().lower()}"
        for m in messages
        if m["role"] != "system"
    ]
    return hashlib.sha256("\n".join(turns).encode()).hexdigest()


def split_for_cluster(*, project_id: int, cluster: int, eval_fraction: float) -> str:
    """A stable pseudo-random draw per cluster: the same cluster always lands in the same
    split, whatever order examples arrive in."""
    digest = hashlib.sha256(f"{project_id}:{cluster}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    return InstructionExample.Split.EVAL if draw < eval_fraction else InstructionExample.Split.TRAIN


@dataclass
class CurationSummary:
    curated: int = 0
    removed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


def _lock_project(project_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)", [CURATION_LOCK_NAMESPACE, project_id]
        )


def _query_embeddings_fill(*, project: Project, interaction_ids: list) -> None:
    """Embed the questions of interactions logged without an embedding. Done before the lock:
    the model is slow, and what it computes depends on nothing curation writes."""
    missing = list(
        Interaction.objects.filter(
            project=project, pk__in=interaction_ids, query_embedding__isnull=True
        ).only("pk", "query_text")
    )
    if not missing:
        return
    vectors = embed_texts([interaction.query_text or " " for interaction in missing])
    for interaction, vector in zip(missing, vectors, strict=True):
        interaction.query_embedding = vector
    Interaction.objects.bulk_update(missing, ["query_embedding"], batch_size=WRITE_BATCH_SIZE)


def _interactions_with_feedback(*, project: Project, interaction_ids: list) -> list[Interaction]:
    """Oldest first, so that the oldest question of a new cluster founds it."""
    interactions = list(
        Interaction.objects.filter(project=project, pk__in=interaction_ids)
        .defer("search_vector")
        .order_by("created_at", "pk")
        .prefetch_related(
            "ratings",
            Prefetch("reviews", queryset=Review.objects.order_by("-created_at", "-pk")),
        )
    )
    for interaction in interactions:
        interaction.project = project  # the prompt builder reads it; saves a query per row
    return interactions


def interactions_curate(*, project: Project, interaction_ids) -> CurationSummary:
    """Curate the given interactions of `project` (idempotent; safe to run concurrently).

    A batch costs a fixed number of queries whatever its size: removals, updates and inserts
    are written in bulk, new examples are clustered against the stored ones with one
    nearest-neighbour query and against each other in memory, and the touched clusters'
    representatives are elected before the examples are written. New examples are clustered
    in the order their interactions were logged, each against the stored examples (as this
    batch updates them) and the new ones before it: the clusters that curating them one at a
    time in that order would give.
    """
    policy = curation_policy_get(project=project)
    interaction_ids = list(interaction_ids)
    _query_embeddings_fill(project=project, interaction_ids=interaction_ids)
    summary = CurationSummary()
    with transaction.atomic():
        _lock_project(project.pk)
        # Taken before the feedback is read: a rating that changes while this batch runs is
        # then newer than the example's curated_at, and the sweeper curates it again.
        curated_at = timezone.now()
        # Read under the lock, so that another worker's examples for the same interactions,
        # committed while this one waited, are updated rather than inserted twice.
        interactions = _interactions_with_feedback(project=project, interaction_ids=interaction_ids)
        stored = {
            example.interaction_id: example
            for example in InstructionExample.objects.filter(
                interaction__in=[interaction.pk for interaction in interactions]
            )
        }
        status_before = {example.pk: example.status for example in stored.values()}
        removed, updated, created = [], [], []
        for interaction in interactions:
            ratings = list(interaction.ratings.all())
            reviews = list(interaction.reviews.all())
            existing = stored.get(interaction.pk)
            if not ratings and not reviews:
                if existing:
                    removed.append(existing)
                continue
            decision = curation_decide(
                interaction=interaction, ratings=ratings,
                review=reviews[0] if reviews else None, policy=policy,
            )  # fmt: skip
            example = existing or InstructionExample(project_id=project.pk, interaction=interaction)
            _example_fill(example, interaction=interaction, decision=decision, policy=policy,
                          curated_at=curated_at)  # fmt: skip
            (updated if existing else created).append(example)
            summary.curated += 1
            summary.by_status[decision.status] = summary.by_status.get(decision.status, 0) + 1
        summary.removed = len(removed)

        InstructionExample.objects.filter(pk__in=[example.pk for example in removed]).delete()
        for example in updated:  # a stored example keeps its cluster; the policy may move it
            example.split = split_for_cluster(
                project_id=project.pk, cluster=example.cluster, eval_fraction=policy.eval_fraction
            )
        # Written before clustering, which reads them; the status waits for the election.
        InstructionExample.objects.bulk_update(
            updated, RECURATED_FIELDS, batch_size=WRITE_BATCH_SIZE
        )
        _clusters_assign(project_id=project.pk, examples=created, policy=policy)
        outvoted, clusters_to_reelect = _representatives_elect(
            project_id=project.pk, touched=[*updated, *created], removed=removed,
            founded={example.pk for example in created if example.cluster == example.pk},
            included_before={pk for pk, was in status_before.items() if was == Status.INCLUDED},
        )  # fmt: skip
        InstructionExample.objects.bulk_create(created, batch_size=WRITE_BATCH_SIZE)
        pks_by_new_status: dict[str, list[int]] = {Status.DUPLICATE: list(outvoted)}
        for example in updated:
            if example.status != status_before[example.pk]:
                pks_by_new_status.setdefault(example.status, []).append(example.pk)
        for status, pks in pks_by_new_status.items():
            InstructionExample.objects.filter(pk__in=pks).update(status=status)
        _clusters_reelect(project_id=project.pk, clusters=clusters_to_reelect)
    return summary


def _example_fill(
    example: InstructionExample, *, interaction, decision, policy, curated_at
) -> None:
    scrub = _scrubber(policy)
    messages = example_messages_build(
        interaction=interaction, target=decision.target, policy=policy
    )
    example.status = decision.status
    example.signal = decision.signal
    example.exclusion_reason = decision.exclusion_reason
    example.messages = messages
    example.rejected_answer = scrub(decision.rejected_answer) if decision.rejected_answer else ""
    example.rating = decision.rating
    example.review = decision.review
    example.content_hash = example_content_hash(messages)
    example.question_embedding = interaction.query_embedding
    example.quality = decision.quality
    example.curated_at = curated_at


def _clusters_assign(
    *, project_id: int, examples: list[InstructionExample], policy: CurationPolicy
) -> None:
    """Give each new example, in order, its id, its cluster and its split. The cluster is an
    exact duplicate's (same content hash), else that of the nearest question within the
    policy's threshold, among the stored examples and the new ones before it; else a cluster
    of its own, named by the example's id."""
    if not examples:
        return
    for example, example_id in zip(examples, _example_ids_reserve(len(examples)), strict=True):
        example.pk = example_id
    stored_cluster_by_hash = dict(
        InstructionExample.objects.filter(
            project_id=project_id, content_hash__in={example.content_hash for example in examples}
        )
        .order_by("content_hash", "pk")
        .distinct("content_hash")
        .values_list("content_hash", "cluster")
    )
    first_position_by_hash: dict[str, int] = {}
    searched = []  # positions of the examples with no exact duplicate
    for position, example in enumerate(examples):
        if example.content_hash in stored_cluster_by_hash:
            continue
        if example.content_hash not in first_position_by_hash:
            first_position_by_hash[example.content_hash] = position
            searched.append(position)
    stored_nearest = _stored_nearest(
        project_id=project_id, examples=[examples[position] for position in searched]
    )
    earlier_nearest = _earlier_nearest(
        np.array([example.question_embedding for example in examples], dtype=np.float64),
        positions=searched,
    )
    candidates = dict(zip(searched, zip(stored_nearest, earlier_nearest, strict=True),
                          strict=True))  # fmt: skip
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
                example.cluster = stored_cluster
            else:
                example.cluster = examples[earlier].cluster
        example.split = split_for_cluster(
            project_id=project_id, cluster=example.cluster, eval_fraction=policy.eval_fraction
        )


def _example_ids_reserve(count: int) -> list[int]:
    """Ids drawn from the table's own sequence, ahead of the insert: a new example that
    founds a cluster names the cluster by its id, and one insert then writes it whole."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [InstructionExample._meta.db_table, count],
        )
        return sorted(row[0] for row in cursor.fetchall())


def _stored_nearest(
    *, project_id: int, examples: list[InstructionExample]
) -> list[tuple[int | None, float]]:
    """For each example's question, the cluster of the project's nearest stored example and
    its cosine distance ((None, inf) with none stored), in one query for all of them. A
    question asked again in the batch is searched once.

    Up to EXACT_SEARCH_MAX_EXAMPLES stored examples, every one is compared. Past that, the
    HNSW index finds the nearest approximately; with many copies of the same question stored,
    as popular questions make, it misses more often (see bench/README.md).
    """
    embedding_keys = [np.asarray(example.question_embedding).tobytes() for example in examples]
    first_by_embedding: dict[bytes, int] = {}
    for index, key in enumerate(embedding_keys):
        first_by_embedding.setdefault(key, index)
    searched = list(first_by_embedding.values())
    if not searched:
        return []
    stored = InstructionExample.objects.filter(project_id=project_id)
    exact = not stored[EXACT_SEARCH_MAX_EXAMPLES:].exists()
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
        cursor.execute(
            "SELECT candidate.position, nearest.cluster, nearest.distance "
            "FROM unnest(%s::uuid[]) WITH ORDINALITY AS candidate(interaction_id, position) "
            f"JOIN {Interaction._meta.db_table} AS interaction "
            "ON interaction.id = candidate.interaction_id "
            f"CROSS JOIN LATERAL (SELECT example.cluster, {distance} AS distance "
            f"FROM {InstructionExample._meta.db_table} AS example "
            "WHERE example.project_id = %s "
            # Adding zero hides the order from the HNSW index: every example is compared.
            f"ORDER BY {f'({distance}) + 0' if exact else distance} LIMIT 1) AS nearest",
            [[examples[index].interaction_id for index in searched], project_id],
        )
        rows = cursor.fetchall()
        if not exact:
            cursor.execute("SET LOCAL enable_sort = on")  # the rest of the transaction sorts
    found = {searched[position - 1]: (cluster, distance) for position, cluster, distance in rows}
    return [found.get(first_by_embedding[key], (None, math.inf)) for key in embedding_keys]


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


def _representatives_elect(
    *, project_id: int, touched: list[InstructionExample], removed: list[InstructionExample],
    founded: set[int], included_before: set[int],
) -> tuple[list[int], set[int]]:  # fmt: skip
    """Set the status of this batch's eligible examples: the best of each cluster (highest
    quality, then the lowest id) is included, the others are duplicates.

    Between batches, each cluster with an eligible example has exactly one included, its
    best. Where this batch left that one alone, the new best is either it or one of the
    examples this batch touched, so the stored duplicates need not be read. Returns the ids of
    the stored representatives that lost, and the clusters where this does not hold (their
    included example was touched or removed, or they have none or several), to be elected
    again from all their members once the batch is written.
    """
    clusters = {example.cluster for example in [*touched, *removed]}
    untouched_representatives: dict[int, list[tuple[int, int]]] = {}
    for cluster, pk, quality in (
        InstructionExample.objects.filter(
            project_id=project_id, status=Status.INCLUDED, cluster__in=clusters
        )
        .exclude(pk__in=included_before)  # touched or removed
        .values_list("cluster", "pk", "quality")
    ):
        untouched_representatives.setdefault(cluster, []).append((pk, quality))
    disturbed = {
        example.cluster for example in [*touched, *removed] if example.pk in included_before
    }
    eligible: dict[int, list[InstructionExample]] = {}
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


def _clusters_reelect(*, project_id: int, clusters: set[int]) -> None:
    """Elect each cluster's representative again from all its eligible members."""
    if not clusters:
        return
    eligible = InstructionExample.objects.filter(
        project_id=project_id, cluster__in=clusters, status__in=[Status.INCLUDED, Status.DUPLICATE]
    )
    best = eligible.order_by("cluster", "-quality", "pk").distinct("cluster").values("pk")
    eligible.filter(status=Status.INCLUDED).exclude(pk__in=best).update(status=Status.DUPLICATE)
    eligible.filter(status=Status.DUPLICATE, pk__in=best).update(status=Status.INCLUDED)


def interaction_curate(*, interaction_id) -> CurationSummary | None:
    project_id = (
        Interaction.objects.filter(pk=interaction_id).values_list("project_id", flat=True).first()
    )
    if project_id is None:
        return None
    return interactions_curate(
        project=Project.objects.get(pk=project_id), interaction_ids=[interaction_id]
    )


def interactions_needing_curation(*, limit: int = 5000) -> dict[int, list]:
    """Interactions whose feedback changed after they were last curated, or that were never
    curated: their curation task was lost. Grouped by project id."""
    curated_at = F("instruction_example__curated_at")
    stale = (
        Interaction.objects.filter(
            Exists(Rating.objects.filter(interaction=OuterRef("pk")))
            | Exists(Review.objects.filter(interaction=OuterRef("pk")))
        )
        .annotate(last_rating=Max("ratings__updated_at"), last_review=Max("reviews__created_at"))
        .filter(
            Q(instruction_example__isnull=True)
            | Q(last_rating__gt=curated_at)
            | Q(last_review__gt=curated_at)
        )
        .values_list("project_id", "pk")[:limit]
    )
    grouped: dict[int, list] = {}
    for project_id, interaction_id in stale:
        grouped.setdefault(project_id, []).append(interaction_id)
    return grouped
