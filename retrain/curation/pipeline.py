"""Turn rated and reviewed interactions into instruction examples.

For each interaction: decide from its current ratings and latest review what the policy makes
of it, build the example exactly as the model was prompted when serving (system prompt and
retrieved context included, RAFT-style; an app's logged interaction keeps the messages it
logged), scrub PII per source, and place it in a near-duplicate cluster.
The cluster decides two things: its best-rated member is the only one that enters datasets,
and its split (train or eval) is a stable function of the cluster, so no paraphrase of an
eval question is ever trained on.

Curation of a project runs under a PostgreSQL advisory lock: concurrent workers take turns,
and re-curating an interaction updates its one example, so running anything twice creates
nothing twice.
"""

from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Exists, F, Max, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone

from feedback.models import Rating, Review
from flywheel.ml.loading import embed_texts
from flywheel.models import Interaction, Project
from retrain.curation.dedupe import (
    clusters_assign,
    clusters_reelect,
    representatives_elect,
)
from retrain.curation.examples import example_content_hash, example_texts_build
from retrain.curation.policy import curation_decide, curation_policy_get
from retrain.curation.split import split_for_cluster
from retrain.models import InstructionExample

Signal = InstructionExample.Signal
Status = InstructionExample.Status

CURATION_LOCK_NAMESPACE = 7_340_001  # first key of pg_advisory_xact_lock(int, int)
WRITE_BATCH_SIZE = 500  # rows per INSERT or UPDATE statement
# What re-curating rewrites in one bulk update; the status follows the election.
RECURATED_FIELDS = [
    "signal",
    "exclusion_reason",
    "messages",
    "rejected_answer",
    "pii_scrubbed",
    "rating",
    "review",
    "content_hash",
    "question_embedding",
    "quality",
    "curated_at",
    "split",
]


@dataclass
class CurationSummary:
    curated: int = 0
    removed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


def project_curation_lock(project_id: int) -> None:
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
        project_curation_lock(project.pk)
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
        removed: list[InstructionExample] = []
        updated: list[InstructionExample] = []
        created: list[InstructionExample] = []
        for interaction in interactions:
            ratings = list(interaction.ratings.all())
            reviews = list(interaction.reviews.all())
            existing = stored.get(interaction.pk)
            if not ratings and not reviews:
                if existing:
                    removed.append(existing)
                continue
            decision = curation_decide(
                interaction=interaction,
                ratings=ratings,
                review=reviews[0] if reviews else None,
                policy=policy,
            )
            example = existing or InstructionExample(project_id=project.pk, interaction=interaction)
            _example_fill(
                example,
                interaction=interaction,
                decision=decision,
                policy=policy,
                curated_at=curated_at,
            )
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
        clusters_assign(project_id=project.pk, examples=created, policy=policy)
        outvoted, clusters_to_reelect = representatives_elect(
            project_id=project.pk,
            touched=[*updated, *created],
            removed=removed,
            founded={example.pk for example in created if example.cluster == example.pk},
            included_before={pk for pk, was in status_before.items() if was == Status.INCLUDED},
        )
        InstructionExample.objects.bulk_create(created, batch_size=WRITE_BATCH_SIZE)
        pks_by_new_status: dict[str, list[int]] = {Status.DUPLICATE: list(outvoted)}
        for example in updated:
            if example.status != status_before[example.pk]:
                pks_by_new_status.setdefault(example.status, []).append(example.pk)
        for status, pks in pks_by_new_status.items():
            InstructionExample.objects.filter(pk__in=pks).update(status=status)
        clusters_reelect(project_id=project.pk, clusters=clusters_to_reelect)
    return summary


def _example_fill(
    example: InstructionExample, *, interaction, decision, policy, curated_at
) -> None:
    texts = example_texts_build(
        interaction=interaction,
        target=decision.target,
        signal=decision.signal,
        rejected_answer=decision.rejected_answer,
        policy=policy,
    )
    example.status = decision.status
    example.signal = decision.signal
    example.exclusion_reason = decision.exclusion_reason
    example.messages = texts.messages
    example.rejected_answer = texts.rejected_answer
    example.pii_scrubbed = texts.pii_scrubbed
    example.rating = decision.rating
    example.review = decision.review
    example.content_hash = example_content_hash(texts.messages)
    example.question_embedding = interaction.query_embedding
    example.quality = decision.quality
    example.curated_at = curated_at


def interaction_curate(*, interaction_id) -> CurationSummary | None:
    project_id = (
        Interaction.objects.filter(pk=interaction_id).values_list("project_id", flat=True).first()
    )
    if project_id is None:
        return None
    return interactions_curate(
        project=Project.objects.get(pk=project_id), interaction_ids=[interaction_id]
    )


def interactions_awaiting_curation() -> QuerySet[Interaction]:
    """Interactions whose feedback changed after they were last curated, or that were never
    curated: their curation task has not run yet, or was lost."""
    curated_at = F("instruction_example__curated_at")
    return (
        Interaction.objects.filter(
            Exists(Rating.objects.filter(interaction=OuterRef("pk")))
            | Exists(Review.objects.filter(interaction=OuterRef("pk")))
        )
        .annotate(last_rating=Max("ratings__updated_at"), last_review=Max("reviews__updated_at"))
        .filter(
            Q(instruction_example__isnull=True)
            | Q(last_rating__gt=curated_at)
            | Q(last_review__gt=curated_at)
        )
    )


def interactions_needing_curation(*, limit: int = 5000) -> dict[int, list]:
    """interactions_awaiting_curation, grouped by project id."""
    stale = interactions_awaiting_curation().values_list("project_id", "pk")[:limit]
    grouped: dict[int, list] = {}
    for project_id, interaction_id in stale:
        grouped.setdefault(project_id, []).append(interaction_id)
    return grouped


def interactions_curate_in_batches(
    *, project: Project, interaction_ids: list, batch_size: int
) -> dict[str, int]:
    """interactions_curate over `interaction_ids`, `batch_size` at a time (each batch one
    transaction under the project's curation lock); the examples by status."""
    by_status: dict[str, int] = {}
    for start in range(0, len(interaction_ids), batch_size):
        summary = interactions_curate(
            project=project, interaction_ids=interaction_ids[start : start + batch_size]
        )
        for status, count in summary.by_status.items():
            by_status[status] = by_status.get(status, 0) + count
    return by_status
