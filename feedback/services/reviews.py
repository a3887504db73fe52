"""Review: a reviewer's verdict on an interaction (approve, reject, or the ideal answer),
submitted directly or from a leased queue item."""

from django.db import transaction

from feedback.models import Review, ReviewLease
from feedback.signals import feedback_announce_after_commit
from flywheel.models import Interaction


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
        feedback_announce_after_commit(interaction_id=interaction.pk, kind="review")
    return review


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
