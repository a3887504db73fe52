"""Review: a reviewer's verdict on an interaction (approve, reject, or the ideal answer),
submitted directly or from a leased queue item."""

from django.db import transaction

from feedback.models import Rating, Review, ReviewLease
from feedback.services.review_queue import interaction_awaits_review
from feedback.signals import feedback_announce_after_commit
from flywheel.models import Interaction
from flywheel.services.verified_answers import (
    verified_answer_publish,
    verified_answers_withdraw,
)


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
        verified_answer_sync(interaction=interaction, review=review)
        feedback_announce_after_commit(interaction_id=interaction.pk, kind="review")
    return review


def approved_answer(*, review: Review) -> str:
    """What a review approves as the answer to its question: the reviewer's ideal answer, or
    the end user's correction a reviewer approved ("" when it approves none)."""
    if review.decision == Review.Decision.CORRECTED:
        return review.ideal_answer
    if review.decision == Review.Decision.APPROVED:
        correction = (
            Rating.objects.filter(interaction_id=review.interaction_id)
            .exclude(correction="")
            .order_by("-updated_at", "-pk")
            .values_list("correction", flat=True)
            .first()
        )
        return (correction or "").strip()
    return ""


def verified_answer_sync(*, interaction: Interaction, review: Review) -> None:
    """The latest review decides the interaction's verified answer: an approved answer is
    published (replacing an earlier one); anything else withdraws it."""
    answer = approved_answer(review=review)
    # A logged exchange without a user question has nothing a later question could match.
    if answer and interaction.query_text.strip():
        verified_answer_publish(interaction=interaction, review_id=review.pk, answer=answer)
    else:
        verified_answers_withdraw(
            interaction=interaction, reason=f"review {review.pk}: {review.decision}"
        )


def review_lease_release(*, interaction: Interaction, reviewer) -> None:
    ReviewLease.objects.filter(interaction=interaction, reviewer=reviewer).delete()


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
        if not interaction_awaits_review(interaction=interaction):
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
