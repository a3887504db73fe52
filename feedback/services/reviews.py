"""Review: a reviewer's verdict on an interaction (approve, reject, or the ideal answer),
submitted directly or from a leased queue item, and revised later by its reviewer, a project
admin or a secret API key; every revision is kept."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import transaction

from feedback.models import Rating, Review, ReviewLease, ReviewRevision
from feedback.selectors import role_for
from feedback.services.review_queue import interaction_awaits_review
from feedback.signals import feedback_announce
from flywheel.models import ApiKey, Interaction
from flywheel.services.verified_answers import (
    verified_answer_publish,
    verified_answers_withdraw,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User


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
        ReviewRevision.objects.create(
            review=review,
            number=1,
            decision=review.decision,
            ideal_answer=review.ideal_answer,
            note=review.note,
            revised_by=reviewer,
            author=reviewer.get_username(),
        )
        ReviewLease.objects.filter(interaction=interaction).delete()
        verified_answer_sync(interaction=interaction, review=review)
        feedback_announce(interaction_id=interaction.pk, kind="review")
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


class ReviewRevisionRefused(Exception):
    """A revision that cannot be made; `code` names why, for the API's error."""

    code = "review_revision_refused"


class ReviewRevisionForbidden(ReviewRevisionRefused):
    code = "review_revision_forbidden"


class ReviewRevisionInvalid(ReviewRevisionRefused):
    """The revised verdict itself is wrong; `field` names the part at fault."""

    code = "invalid_review_revision"

    def __init__(self, message: str, *, field: str):
        self.field = field
        super().__init__(message)


class ReviewRevisionUnchanged(ReviewRevisionRefused):
    code = "review_revision_unchanged"


class ReviewSuperseded(ReviewRevisionRefused):
    """A later review of the interaction counts instead: revising this one would change
    nothing downstream, so it is refused rather than silently ignored."""

    code = "review_superseded"


@dataclass(frozen=True)
class ReviewReviser:
    """Who revises: a dashboard user, or a project's secret API key."""

    user: "User | None" = None
    api_key: ApiKey | None = None

    def __post_init__(self):
        if (self.user is None) == (self.api_key is None):
            raise ValueError("a revision has one author: a user or an API key")

    @property
    def name(self) -> str:
        if self.api_key is not None:
            return f"API key {self.api_key}"
        assert self.user is not None
        return self.user.get_username()


def review_revise_check_allowed(*, review: Review, reviser: ReviewReviser) -> None:
    """Raise ReviewRevisionForbidden unless `reviser` may revise `review`: its own reviewer
    (still a reviewer of the project), any admin of the project, or an active secret key of
    the project with the `datasets` scope."""
    project = review.interaction.project
    key, user = reviser.api_key, reviser.user
    if key is not None:
        if not (
            key.project_id == project.pk
            and key.kind == ApiKey.Kind.SECRET
            and key.is_active
            and key.has_scope(ApiKey.Scope.DATASETS)
        ):
            raise ReviewRevisionForbidden(
                "Only an active secret key of the project with the 'datasets' scope may revise."
            )
        return
    role = role_for(user=user, project=project)
    if role == "admin":
        return
    if role == "reviewer" and user is not None and review.reviewer_id == user.pk:
        return
    raise ReviewRevisionForbidden("Only its reviewer or a project admin may revise this review.")


def _revised_verdict(*, review: Review, decision: str, ideal_answer: str, note: str | None):
    if decision not in Review.Decision.values:
        raise ReviewRevisionInvalid(
            f"Unknown decision {decision!r}: one of {', '.join(Review.Decision.values)}.",
            field="decision",
        )
    ideal_answer = ideal_answer.strip() if decision == Review.Decision.CORRECTED else ""
    if decision == Review.Decision.CORRECTED and not ideal_answer:
        raise ReviewRevisionInvalid(
            "A corrected review needs the ideal answer.", field="ideal_answer"
        )
    return decision, ideal_answer, review.note if note is None else note.strip()


def review_revise(
    *,
    review: Review,
    reviser: ReviewReviser,
    decision: str,
    ideal_answer: str = "",
    note: str | None = None,
) -> Review:
    """Amend the interaction's current review and keep the new state as its next revision.

    `note=None` keeps the note as it is. The interaction's verified answer follows the
    revision (an approval publishes or replaces it, a rejection withdraws it), and the
    interaction is announced as reviewed, in this transaction, so that curation runs again and
    replaces its instruction example.

    Refused with ReviewRevisionForbidden, ReviewRevisionInvalid, ReviewRevisionUnchanged or
    ReviewSuperseded. Runs under the interaction's row lock, the one the review queue takes,
    so a new review cannot supersede this one halfway through.
    """
    review_revise_check_allowed(review=review, reviser=reviser)
    with transaction.atomic():
        interaction = Interaction.objects.select_for_update().get(pk=review.interaction_id)
        review = Review.objects.select_for_update().get(pk=review.pk)
        latest_id = (
            Review.objects.filter(interaction=interaction)
            .order_by("-created_at", "-pk")
            .values_list("pk", flat=True)
            .first()
        )
        if latest_id != review.pk:
            raise ReviewSuperseded(
                "A later review of this interaction counts instead; revise that one."
            )
        decision, ideal_answer, note = _revised_verdict(
            review=review, decision=decision, ideal_answer=ideal_answer, note=note
        )
        verdict_changed = (decision, ideal_answer) != (review.decision, review.ideal_answer)
        if not verdict_changed and note == review.note:
            raise ReviewRevisionUnchanged("This revision changes nothing in the review.")
        review.decision, review.ideal_answer, review.note = decision, ideal_answer, note
        review.save(update_fields=["decision", "ideal_answer", "note", "updated_at"])
        ReviewRevision.objects.create(
            review=review,
            number=review.revisions.count() + 1,
            decision=decision,
            ideal_answer=ideal_answer,
            note=note,
            revised_by=reviser.user,
            revised_by_api_key=reviser.api_key,
            author=reviser.name,
        )
        # A note alone changes no answer: republishing would only reset a stale answer.
        if verdict_changed:
            verified_answer_sync(interaction=interaction, review=review)
        feedback_announce(interaction_id=interaction.pk, kind="review")
    return review
