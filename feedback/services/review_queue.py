"""The review queue: which interaction a reviewer works next (thumbs-down and corrections
first, then low scores, then a sample of the rest), leased so two reviewers never share one."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Exists, IntegerField, OuterRef, Q, Value, When
from django.db.models.expressions import RawSQL
from django.utils import timezone

from feedback.models import LOW_SCORE_MAX, Rating, Review, ReviewLease
from flywheel.models import Interaction, Project, VerifiedAnswer


class QueuePriority:
    STALE_VERIFIED_ANSWER = -1  # reviewed, but a document its verified answer rests on changed
    NEGATIVE = 0  # a thumbs-down or a suggested correction
    LOW_SCORE = 1  # a score of LOW_SCORE_MAX or less
    SAMPLED = 2  # the random sample of everything else


def awaits_review(interaction: OuterRef) -> Q:
    """Never reviewed, or reviewed but its verified answer went stale: a document it rests on
    changed after approval, so a reviewer must look again before it is served."""
    stale = VerifiedAnswer.objects.filter(
        interaction=interaction, status=VerifiedAnswer.Status.STALE
    )
    return Q(~Exists(Review.objects.filter(interaction=interaction))) | Q(Exists(stale))


def interaction_awaits_review(*, interaction: Interaction) -> bool:
    return (
        Interaction.objects.filter(pk=interaction.pk).filter(awaits_review(OuterRef("pk"))).exists()
    )


def review_queue_candidates(*, project: Project, reviewer, exclude_ids=()):
    """Unreviewed interactions nobody else holds, in queue order. Beyond the negative and
    low-scored ones, a stable pseudo-random FLYWHEEL_REVIEW_SAMPLE_PERCENT of the rest."""
    now = timezone.now()
    ratings = Rating.objects.filter(interaction=OuterRef("pk"))
    return (
        Interaction.objects.filter(project=project)
        .exclude(pk__in=list(exclude_ids))
        .filter(awaits_review(OuterRef("pk")))
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
            stale=Exists(
                VerifiedAnswer.objects.filter(
                    interaction=OuterRef("pk"), status=VerifiedAnswer.Status.STALE
                )
            ),
            # hashtext() spreads ids evenly and gives the same answer on every call.
            sampled=RawSQL(
                "abs(hashtext(flywheel_interaction.id::text)) %% 100 < %s",
                [settings.FLYWHEEL_REVIEW_SAMPLE_PERCENT],
            ),
        )
        .filter(Q(stale=True) | Q(negative=True) | Q(low_score=True) | Q(sampled=True))
        .annotate(
            priority=Case(
                When(stale=True, then=Value(QueuePriority.STALE_VERIFIED_ANSWER)),
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
    return not claimed_by_others.exists() and interaction_awaits_review(interaction=interaction)


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
            .filter(awaits_review(OuterRef("interaction")))
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
