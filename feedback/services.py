"""Writes of the feedback app. Keyword-only, typed, named <entity>_<action>."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Exists, IntegerField, OuterRef, Q, Value, When
from django.db.models.expressions import RawSQL
from django.utils import timezone

from feedback.models import (
    Interaction,
    Rating,
    RatingSubmission,
    Review,
    ReviewLease,
)
from feedback.signals import feedback_recorded
from flywheel.models import IndexVersion, ModelVersion, Project


def interaction_record(
    *,
    project: Project,
    source: str,
    messages: list[dict],
    query_text: str,
    response: str,
    interaction_id: uuid.UUID | None = None,
    query_embedding=None,
    retrieved: list[dict] | None = None,
    model_version: ModelVersion | None = None,
    model_name: str = "",
    index_version: IndexVersion | None = None,
    latency_ms: int | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    session_id: str = "",
    end_user_id: str = "",
    metadata: dict | None = None,
) -> Interaction:
    return Interaction.objects.create(
        id=interaction_id or uuid.uuid4(),
        project=project,
        source=source,
        messages=messages,
        query_text=query_text,
        query_embedding=query_embedding,
        retrieved=retrieved or [],
        response=response,
        model_version=model_version,
        model_name=model_name,
        index_version=index_version,
        latency_ms=latency_ms,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        session_id=session_id,
        end_user_id=end_user_id,
        metadata=metadata or {},
        created_at=timezone.now(),
    )


@dataclass(frozen=True)
class LoggedInteraction:
    id: uuid.UUID
    idempotency_key: str | None
    created: bool


def _query_text(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def interactions_log_batch(
    *, project: Project, interactions: list[dict]
) -> list[LoggedInteraction]:
    """Store interactions an app logged itself, all or none.

    An interaction whose idempotency key is already stored (or repeated in the batch) is not
    stored again; its existing id is returned with `created` false.
    """
    now = timezone.now()
    rows: list[Interaction] = []
    for item in interactions:
        created_at: datetime | None = item.get("created_at")
        rows.append(
            Interaction(
                id=uuid.uuid4(),
                project=project,
                source=Interaction.Source.LOG,
                idempotency_key=item.get("idempotency_key"),
                session_id=item.get("session_id") or "",
                end_user_id=item.get("end_user_id") or "",
                messages=item["messages"],
                query_text=_query_text(item["messages"]),
                retrieved=item.get("retrieved") or [],
                response=item["response"],
                model_name=item.get("model") or "",
                latency_ms=item.get("latency_ms"),
                prompt_tokens=item.get("prompt_tokens"),
                completion_tokens=item.get("completion_tokens"),
                metadata=item.get("metadata") or {},
                created_at=created_at or now,
            )
        )
    with transaction.atomic():
        # Concurrent batches with the same key: the unique constraint decides, and the
        # loser reads the winner's id below.
        Interaction.objects.bulk_create(rows, ignore_conflicts=True)
        keys = {row.idempotency_key for row in rows if row.idempotency_key}
        stored_ids = dict(
            Interaction.objects.filter(project=project, idempotency_key__in=keys).values_list(
                "idempotency_key", "id"
            )
        )
    results, seen = [], set()
    for row in rows:
        key = row.idempotency_key
        if key is None:
            results.append(LoggedInteraction(id=row.id, idempotency_key=None, created=True))
            continue
        created = stored_ids[key] == row.id and key not in seen
        seen.add(key)
        results.append(LoggedInteraction(id=stored_ids[key], idempotency_key=key, created=created))
    return results


class InteractionNotFound(Exception):
    def __init__(self, interaction_id):
        super().__init__(f"No interaction {interaction_id} in this project.")
        self.interaction_id = interaction_id


def _announce_after_commit(*, interaction_id: uuid.UUID, kind: str) -> None:
    transaction.on_commit(
        lambda: feedback_recorded.send(sender=Interaction, interaction_id=interaction_id, kind=kind)
    )


RATING_FIELDS = ("thumb", "score", "comment", "correction", "tags")


def rating_submit(
    *,
    interaction: Interaction,
    rater_id: str,
    source: str,
    thumb: str = "",
    score: int | None = None,
    comment: str = "",
    correction: str = "",
    tags: list[str] | None = None,
) -> Rating:
    """Record a rating; it replaces the rater's earlier one, which stays in the history."""
    values = {
        "thumb": thumb or "",
        "score": score,
        "comment": comment or "",
        "correction": correction or "",
        "tags": tags or [],
        "source": source,
    }
    with transaction.atomic():
        rating, _ = Rating.objects.select_for_update().update_or_create(
            interaction=interaction, rater_id=rater_id, defaults=values
        )
        RatingSubmission.objects.create(rating=rating, **values)
        _announce_after_commit(interaction_id=interaction.pk, kind="rating")
    return rating


def ratings_submit_batch(*, project: Project, ratings: list[dict], source: str) -> list[Rating]:
    """All ratings or none; every interaction must belong to `project`."""
    wanted = {item["interaction_id"] for item in ratings}
    interactions = {i.pk: i for i in Interaction.objects.filter(project=project, pk__in=wanted)}
    missing = [i for i in wanted if i not in interactions]
    if missing:
        raise InteractionNotFound(missing[0])
    with transaction.atomic():
        return [
            rating_submit(
                interaction=interactions[item["interaction_id"]],
                rater_id=item["rater_id"],
                source=source,
                **{field: item.get(field) for field in RATING_FIELDS},
            )
            for item in ratings
        ]


def review_submit(
    *,
    interaction: Interaction,
    reviewer,
    decision: str,
    ideal_answer: str = "",
    note: str = "",
) -> Review:
    """Record a verdict and hand the item back from the reviewer's lease."""
    with transaction.atomic():
        review = Review.objects.create(
            interaction=interaction,
            reviewer=reviewer,
            decision=decision,
            ideal_answer=ideal_answer.strip() if decision == Review.Decision.CORRECTED else "",
            note=note,
        )
        ReviewLease.objects.filter(interaction=interaction).delete()
        _announce_after_commit(interaction_id=interaction.pk, kind="review")
    return review


class QueuePriority:
    NEGATIVE = 0  # a thumbs-down or a suggested correction
    LOW_SCORE = 1  # a score of LOW_SCORE_MAX or less
    SAMPLED = 2  # the random sample of everything else


LOW_SCORE_MAX = 2


def review_queue_candidates(*, project: Project, reviewer, exclude_ids=()):
    """Unreviewed interactions nobody else holds, in queue order. Beyond the negative and
    low-scored ones, a stable pseudo-random FLYWHEEL_REVIEW_SAMPLE_PERCENT of the rest."""
    now = timezone.now()
    ratings = Rating.objects.filter(interaction=OuterRef("pk"))
    return (
        Interaction.objects.filter(project=project)
        .exclude(pk__in=list(exclude_ids))
        .filter(~Exists(Review.objects.filter(interaction=OuterRef("pk"))))
        .filter(
            ~Exists(
                ReviewLease.objects.filter(interaction=OuterRef("pk"), expires_at__gt=now).exclude(
                    reviewer=reviewer
                )
            )
        )
        .annotate(
            negative=Exists(ratings.filter(Q(thumb="down") | ~Q(correction=""))),
            low_score=Exists(ratings.filter(score__lte=LOW_SCORE_MAX)),
            # hashtext() spreads ids evenly and gives the same answer on every call.
            sampled=RawSQL(
                "abs(hashtext(feedback_interaction.id::text)) %% 100 < %s",
                [settings.FLYWHEEL_REVIEW_SAMPLE_PERCENT],
            ),
        )
        .filter(Q(negative=True) | Q(low_score=True) | Q(sampled=True))
        .annotate(
            priority=Case(
                When(negative=True, then=Value(QueuePriority.NEGATIVE)),
                When(low_score=True, then=Value(QueuePriority.LOW_SCORE)),
                default=Value(QueuePriority.SAMPLED),
                output_field=IntegerField(),
            )
        )
        .order_by("priority", "created_at")
    )


def _review_queue_still_unclaimed(*, interaction: Interaction, reviewer) -> bool:
    """Look again, under the interaction's row lock, for a lease or review the candidate query
    could not see: its snapshot dates from when it started, and a lease committed by another
    reviewer while it ran leaves the interaction row unchanged, so Postgres does not re-check
    it. Whoever leases or reviews through the queue holds this lock until they commit, so what
    this fresh statement reads is settled."""
    claimed_by_others = ReviewLease.objects.filter(
        interaction=interaction, expires_at__gt=timezone.now()
    ).exclude(reviewer=reviewer)
    return not (
        claimed_by_others.exists() or Review.objects.filter(interaction=interaction).exists()
    )


def review_queue_next(*, project: Project, reviewer, exclude_ids=()) -> Interaction | None:
    """Lease the next interaction to `reviewer` (or renew the one they hold).

    SKIP LOCKED makes concurrent reviewers pass over a row another is leasing right now, and
    the look again under the lock catches a lease committed while the candidate query ran, so
    two never get the same item.
    """
    lease_for = timedelta(seconds=settings.FLYWHEEL_REVIEW_LEASE_SECONDS)
    with transaction.atomic():
        held = (
            ReviewLease.objects.select_for_update()
            .filter(reviewer=reviewer, interaction__project=project, expires_at__gt=timezone.now())
            .exclude(interaction_id__in=list(exclude_ids))
            .exclude(interaction__reviews__isnull=False)
            .first()
        )
        if held:
            held.expires_at = timezone.now() + lease_for
            held.save(update_fields=["expires_at"])
            return held.interaction
        passed_over = list(exclude_ids)
        while True:
            interaction = (
                review_queue_candidates(project=project, reviewer=reviewer, exclude_ids=passed_over)
                .select_for_update(skip_locked=True, of=("self",))
                .first()
            )
            if interaction is None:
                return None
            if _review_queue_still_unclaimed(interaction=interaction, reviewer=reviewer):
                break
            passed_over.append(interaction.pk)
        ReviewLease.objects.update_or_create(
            interaction=interaction,
            defaults={"reviewer": reviewer, "expires_at": timezone.now() + lease_for},
        )
        return interaction


def review_lease_release(*, interaction: Interaction, reviewer) -> None:
    ReviewLease.objects.filter(interaction=interaction, reviewer=reviewer).delete()


# --- Annotation queue: a verdict counts only from the reviewer who holds the item ------------


class ReviewLeaseLost(Exception):
    """The reviewer no longer holds the interaction: it was reviewed already, or its lease
    expired and the queue handed it to another reviewer."""

    def __init__(self, *, already_reviewed: bool):
        self.already_reviewed = already_reviewed
        super().__init__("already reviewed" if already_reviewed else "leased to someone else")


def review_submit_leased(
    *,
    interaction: Interaction,
    reviewer,
    decision: str,
    ideal_answer: str = "",
    note: str = "",
) -> Review:
    """review_submit for the annotation queue, refused (ReviewLeaseLost) unless `reviewer`
    still holds the lease and nobody has reviewed the item.

    The check and the write happen under the interaction's row lock, the same lock
    review_queue_next takes before it leases, so neither a second submit (a double key press)
    nor the queue handing the item on can slip in between them. A lease that expired but went
    to nobody else still counts: the work is the reviewer's and nobody else is on it.
    """
    with transaction.atomic():
        Interaction.objects.select_for_update().only("pk").get(pk=interaction.pk)
        if Review.objects.filter(interaction=interaction).exists():
            raise ReviewLeaseLost(already_reviewed=True)
        if not ReviewLease.objects.filter(interaction=interaction, reviewer=reviewer).exists():
            raise ReviewLeaseLost(already_reviewed=False)
        return review_submit(
            interaction=interaction,
            reviewer=reviewer,
            decision=decision,
            ideal_answer=ideal_answer,
            note=note,
        )
