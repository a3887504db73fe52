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

import json
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Exists, F, Max, OuterRef, Q, QuerySet
from django.utils import timezone

from feedback.models import Rating, Review
from flywheel.ml.loading import embed_texts
from flywheel.models import Interaction, Project
from retrain.curation.dedupe import (
    clusters_assign,
    clusters_reelect,
    representatives_elect,
)
from retrain.curation.examples import (
    CuratedExample,
    ExampleBuilder,
    InteractionRow,
    StoredExample,
)
from retrain.curation.policy import (
    RatingSignal,
    ReviewSignal,
    curation_decide,
    curation_policy_get,
)
from retrain.curation.split import split_for_cluster
from retrain.models import InstructionExample

Signal = InstructionExample.Signal
Status = InstructionExample.Status

CURATION_LOCK_NAMESPACE = 7_340_001  # first key of pg_advisory_xact_lock(int, int)
WRITE_BATCH_SIZE = 500  # rows per UPDATE statement of the embeddings filled in
EXAMPLES_TABLE = InstructionExample._meta.db_table
# Every column a new example is written with; one added to the model without a database
# default must be added here.
EXAMPLE_COLUMNS = (
    "id",
    "project_id",
    "interaction_id",
    "status",
    "signal",
    "exclusion_reason",
    "messages",
    "rejected_answer",
    "pii_scrubbed",
    "rating_id",
    "review_id",
    "content_hash",
    "question_embedding",
    "first_of_question",
    "cluster",
    "split",
    "quality",
    "curated_at",
)
# What re-curating rewrites, with its column type; the status follows the election, and an
# example keeps its question embedding, hence its cluster.
RECURATED_COLUMNS = {
    "signal": "varchar",
    "exclusion_reason": "varchar",
    "messages": "jsonb",
    "rejected_answer": "text",
    "pii_scrubbed": "jsonb",
    "rating_id": "bigint",
    "review_id": "bigint",
    "content_hash": "varchar",
    "quality": "smallint",
    "curated_at": "timestamptz",
    "split": "varchar",
}


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
    """Embed the questions of interactions logged without an embedding, each distinct
    question once. Done before the lock: the model is slow, and what it computes depends on
    nothing curation writes."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, query_text FROM {Interaction._meta.db_table} "
            "WHERE project_id = %s AND id = ANY(%s::uuid[]) AND query_embedding IS NULL",
            [project.pk, interaction_ids],
        )
        missing = [Interaction(pk=pk, query_text=text) for pk, text in cursor.fetchall()]
    if not missing:
        return
    vectors = embed_texts([interaction.query_text or " " for interaction in missing])
    for interaction, vector in zip(missing, vectors, strict=True):
        interaction.query_embedding = vector
    Interaction.objects.bulk_update(missing, ["query_embedding"], batch_size=WRITE_BATCH_SIZE)


def _interaction_rows(*, project: Project, interaction_ids: list) -> list[InteractionRow]:
    """Oldest first, so that the oldest question of a new cluster founds it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, source, messages::text, query_text, response, retrieved::text, "
            "CASE WHEN metadata -> 'flywheel' ? 'rag' THEN (metadata -> 'flywheel' -> 'rag')::text "
            "END, query_embedding::text "
            f"FROM {Interaction._meta.db_table} "
            "WHERE project_id = %s AND id = ANY(%s::uuid[]) ORDER BY created_at, id",
            [project.pk, interaction_ids],
        )
        fetched = cursor.fetchall()
    rows = []
    for pk, source, messages, question, answer, retrieved, rag, embedding in fetched:
        rows.append(
            InteractionRow(
                id=pk,
                source=source,
                messages_json=messages,
                query_text=question,
                response=answer,
                retrieved_json=retrieved,
                rag=rag is None or bool(json.loads(rag)),
                query_embedding=embedding,
            )
        )
    return rows


def _ratings_by_interaction(interaction_ids: list) -> dict[object, list[RatingSignal]]:
    grouped: dict[object, list[RatingSignal]] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT interaction_id, id, thumb, score, correction, updated_at "
            f"FROM {Rating._meta.db_table} WHERE interaction_id = ANY(%s::uuid[]) ORDER BY id",
            [interaction_ids],
        )
        for interaction_id, *rating in cursor.fetchall():
            grouped.setdefault(interaction_id, []).append(RatingSignal(*rating))
    return grouped


def _latest_reviews(interaction_ids: list) -> dict[object, ReviewSignal]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON (interaction_id) interaction_id, id, decision, ideal_answer "
            f"FROM {Review._meta.db_table} WHERE interaction_id = ANY(%s::uuid[]) "
            "ORDER BY interaction_id, created_at DESC, id DESC",
            [interaction_ids],
        )
        return {interaction_id: ReviewSignal(*review) for interaction_id, *review in cursor}


def _stored_examples(interaction_ids: list) -> dict[object, StoredExample]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT interaction_id, id, status, cluster, first_of_question "
            f"FROM {EXAMPLES_TABLE} WHERE interaction_id = ANY(%s::uuid[])",
            [interaction_ids],
        )
        return {interaction_id: StoredExample(*example) for interaction_id, *example in cursor}


def interactions_curate(*, project: Project, interaction_ids) -> CurationSummary:
    """Curate the given interactions of `project` (idempotent; safe to run concurrently).

    A batch costs a fixed number of queries whatever its size: interactions, ratings, reviews
    and stored examples are read in one query each, removals, updates and inserts are written
    in bulk (new examples with COPY), new examples are clustered against the stored ones with
    one nearest-neighbour query and against each other in memory, and the touched clusters'
    representatives are elected before the examples are written. New examples are clustered
    in the order their interactions were logged, each against the stored examples (as this
    batch updates them) and the new ones before it: the clusters that curating them one at a
    time in that order would give. Work that depends only on a text (building a prompt,
    scrubbing PII, embedding a question) is done once per distinct text.
    """
    policy = curation_policy_get(project=project)
    interaction_ids = [str(interaction_id) for interaction_id in interaction_ids]
    _query_embeddings_fill(project=project, interaction_ids=interaction_ids)
    summary = CurationSummary()
    with transaction.atomic():
        project_curation_lock(project.pk)
        # Taken before the feedback is read: a rating that changes while this batch runs is
        # then newer than the example's curated_at, and the sweeper curates it again.
        curated_at = timezone.now()
        # Read under the lock, so that another worker's examples for the same interactions,
        # committed while this one waited, are updated rather than inserted twice.
        rows = _interaction_rows(project=project, interaction_ids=interaction_ids)
        ids = [row.id for row in rows]
        ratings = _ratings_by_interaction(ids)
        reviews = _latest_reviews(ids)
        stored = _stored_examples(ids)
        builder = ExampleBuilder(project=project, policy=policy, interaction_ids=ids)
        removed: list[StoredExample] = []
        updated: list[CuratedExample] = []
        created: list[CuratedExample] = []
        for row in rows:
            row_ratings = ratings.get(row.id, [])
            review = reviews.get(row.id)
            existing = stored.get(row.id)
            if not row_ratings and review is None:
                if existing:
                    removed.append(existing)
                continue
            decision = curation_decide(
                question=row.query_text,
                answer=row.response,
                ratings=row_ratings,
                review=review,
                policy=policy,
            )
            example = CuratedExample(
                interaction_id=row.id,
                question_embedding=row.query_embedding,
                status=decision.status,
                signal=decision.signal,
                exclusion_reason=decision.exclusion_reason,
                quality=decision.quality,
                rating_id=decision.rating.id if decision.rating else None,
                review_id=decision.review.id if decision.review else None,
                texts=builder.build(
                    row,
                    target=decision.target,
                    signal=decision.signal,
                    rejected_answer=decision.rejected_answer,
                ),
            )
            if existing:
                example.pk, example.cluster = existing.pk, existing.cluster
                updated.append(example)
            else:
                created.append(example)
            summary.curated += 1
            summary.by_status[decision.status] = summary.by_status.get(decision.status, 0) + 1
        summary.removed = len(removed)

        _examples_remove(removed)
        for example in updated:  # a stored example keeps its cluster; the policy may move it
            example.split = split_for_cluster(
                project_id=project.pk, cluster=example.cluster, eval_fraction=policy.eval_fraction
            )
        # Written before clustering, which reads them; the status waits for the election.
        _examples_recurated_write(updated, curated_at=curated_at)
        clusters_assign(project_id=project.pk, examples=created, policy=policy)
        included_before = {
            example.pk for example in stored.values() if example.status == Status.INCLUDED
        }
        outvoted, clusters_to_reelect = representatives_elect(
            project_id=project.pk,
            touched=[*updated, *created],
            removed=removed,
            founded={example.pk for example in created if example.cluster == example.pk},
            included_before=included_before,
        )
        _examples_insert(created, project_id=project.pk, curated_at=curated_at)
        status_before = {example.pk: example.status for example in stored.values()}
        pks_by_new_status: dict[str, list[int]] = {Status.DUPLICATE: list(outvoted)}
        for example in updated:
            if example.status != status_before[example.pk]:
                pks_by_new_status.setdefault(example.status, []).append(example.pk)
        for status, pks in pks_by_new_status.items():
            InstructionExample.objects.filter(pk__in=pks).update(status=status)
        clusters_reelect(project_id=project.pk, clusters=clusters_to_reelect)
    return summary


def _examples_remove(removed: list[StoredExample]) -> None:
    """Delete the examples; where one was the first of its question, the next stored example
    of the same question (the lowest id) takes the mark over, so the near-duplicate search
    still finds that question."""
    if not removed:
        return
    pks = [example.pk for example in removed]
    firsts = [example.pk for example in removed if example.first_of_question]
    if firsts:
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {EXAMPLES_TABLE} SET first_of_question = false WHERE id = ANY(%s)",
                [firsts],
            )
            cursor.execute(
                f"UPDATE {EXAMPLES_TABLE} SET first_of_question = true WHERE id IN ("
                "SELECT DISTINCT ON (heir.question_embedding) heir.id "
                f"FROM {EXAMPLES_TABLE} AS gone JOIN {EXAMPLES_TABLE} AS heir "
                "ON heir.project_id = gone.project_id "
                "AND heir.question_embedding = gone.question_embedding "
                "WHERE gone.id = ANY(%s) AND heir.id <> ALL(%s) "
                "ORDER BY heir.question_embedding, heir.id)",
                [firsts, pks],
            )
    InstructionExample.objects.filter(pk__in=pks).delete()


def _examples_insert(examples: list[CuratedExample], *, project_id: int, curated_at) -> None:
    """One COPY for the batch's new examples."""
    if not examples:
        return
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(
            f"COPY {EXAMPLES_TABLE} ({', '.join(EXAMPLE_COLUMNS)}) FROM STDIN"
        ) as copy,
    ):
        for example in examples:
            copy.write_row(
                (
                    example.pk,
                    project_id,
                    example.interaction_id,
                    example.status,
                    example.signal,
                    example.exclusion_reason,
                    example.texts.messages_json,
                    example.texts.rejected_answer,
                    json.dumps(example.texts.pii_scrubbed),
                    example.rating_id,
                    example.review_id,
                    example.content_hash,
                    example.question_embedding,
                    example.first_of_question,
                    example.cluster,
                    example.split,
                    example.quality,
                    curated_at,
                )
            )


def _examples_recurated_write(examples: list[CuratedExample], *, curated_at) -> None:
    """The re-curated examples' new contents, copied into a scratch table and written with
    one UPDATE."""
    if not examples:
        return
    columns = ", ".join(f"{name} {kind}" for name, kind in RECURATED_COLUMNS.items())
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE recurated_example (id bigint, {columns})")
        with cursor.cursor.copy(
            f"COPY recurated_example (id, {', '.join(RECURATED_COLUMNS)}) FROM STDIN"
        ) as copy:
            for example in examples:
                copy.write_row(
                    (
                        example.pk,
                        example.signal,
                        example.exclusion_reason,
                        example.texts.messages_json,
                        example.texts.rejected_answer,
                        json.dumps(example.texts.pii_scrubbed),
                        example.rating_id,
                        example.review_id,
                        example.content_hash,
                        example.quality,
                        curated_at,
                        example.split,
                    )
                )
        assignments = ", ".join(f"{name} = recurated.{name}" for name in RECURATED_COLUMNS)
        cursor.execute(
            f"UPDATE {EXAMPLES_TABLE} AS example SET {assignments} "
            "FROM recurated_example AS recurated WHERE example.id = recurated.id"
        )
        cursor.execute("DROP TABLE recurated_example")


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
