"""Reads of the annotation queue: what a reviewer sees about an item, and how far reviewers got."""

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db.models import Count, Q
from django.utils import timezone

from feedback.models import (
    LOW_SCORE_MAX,
    PairwiseJudgement,
    ProjectMembership,
    Rating,
    Review,
    Thumb,
)
from feedback.services.pairwise import shadow_answer_comparable
from feedback.services.review_queue import QueuePriority, review_queue_candidates
from flywheel.models import Interaction, Project, ShadowAnswer

QUEUE_REASONS = {
    QueuePriority.NEGATIVE: "An end user gave it a thumbs-down or suggested a correction.",
    QueuePriority.LOW_SCORE: f"An end user scored it {LOW_SCORE_MAX} out of 5 or lower.",
    QueuePriority.SAMPLED: "No complaint: it was drawn in the random sample of other answers.",
}


@dataclass(frozen=True)
class Passage:
    title: str
    heading: str
    score: float | None
    text: str


def _passage(logged: dict) -> Passage:
    # Apps that log their own interactions may leave any of these out.
    return Passage(
        title=logged.get("title") or logged.get("source_uri") or "(untitled)",
        heading=logged.get("heading") or "",
        score=logged.get("score"),
        text=logged.get("text") or "",
    )


@dataclass(frozen=True)
class ShadowComparison:
    """A candidate's shadow answer to the item's prompt, to judge beside the served one, and
    the reviewer's judgement of it so far (None before they judge)."""

    shadow_answer: ShadowAnswer
    judgement: PairwiseJudgement | None


@dataclass(frozen=True)
class QueueItem:
    interaction: Interaction
    ratings: list[Rating]
    passages: list[Passage]
    priority: int
    # The newest correction an end user suggested, or "" when nobody did.
    suggested_correction: str
    # Shadow answers a candidate gave to the same prompt, oldest first; empty for most items.
    shadow_comparisons: list[ShadowComparison]

    @property
    def reason(self) -> str:
        return QUEUE_REASONS[self.priority]

    @property
    def editor_text(self) -> str:
        """What the ideal-answer editor starts from: the end user's fix, else the answer."""
        return self.suggested_correction or self.interaction.response


def _queue_priority(ratings: list[Rating]) -> int:
    # The same rule, in the same order, as the priority in review_queue_candidates.
    if any(rating.thumb == Thumb.DOWN or rating.correction for rating in ratings):
        return QueuePriority.NEGATIVE
    if any(rating.score is not None and rating.score <= LOW_SCORE_MAX for rating in ratings):
        return QueuePriority.LOW_SCORE
    return QueuePriority.SAMPLED


def shadow_comparisons_list(*, interaction: Interaction, reviewer) -> list[ShadowComparison]:
    """The shadow answers of `interaction` that hold an answer (a failed one has nothing to
    compare), each with `reviewer`'s judgement of it."""
    shadow_answers = interaction.shadow_answers.select_related(
        "model_version", "index_version"
    ).order_by("created_at", "pk")
    judgements = {
        judgement.shadow_answer_id: judgement
        for judgement in PairwiseJudgement.objects.filter(
            interaction=interaction, reviewer=reviewer
        )
    }
    return [
        ShadowComparison(shadow_answer=shadow, judgement=judgements.get(shadow.pk))
        for shadow in shadow_answers
        if shadow_answer_comparable(shadow)
    ]


def queue_item_get(*, interaction: Interaction, reviewer) -> QueueItem:
    """What `reviewer` sees of `interaction`, the candidates' shadow answers beside the served
    one included."""
    ratings = list(interaction.ratings.order_by("-updated_at"))
    return QueueItem(
        interaction=interaction,
        ratings=ratings,
        passages=[_passage(logged) for logged in interaction.retrieved],
        priority=_queue_priority(ratings),
        suggested_correction=next((r.correction for r in ratings if r.correction), ""),
        shadow_comparisons=shadow_comparisons_list(interaction=interaction, reviewer=reviewer),
    )


@dataclass(frozen=True)
class ReviewerProgress:
    user_id: int
    username: str
    reviewed_today: int
    reviewed_total: int


@dataclass(frozen=True)
class QueueProgress:
    reviewed_today: int
    reviewed_total: int
    items_left: int
    reviewers: list[ReviewerProgress]


def _start_of_today() -> datetime:
    return timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)


def reviewers_progress_list(*, project: Project) -> list[ReviewerProgress]:
    """Every reviewer and admin of the project, and anyone else who reviewed in it, with the
    items they reviewed today and in total; the busiest first."""
    # Items, not reviews: a reviewer who revises a verdict has still reviewed one item.
    counts = {
        row["reviewer_id"]: row
        for row in Review.objects.filter(interaction__project=project)
        .values("reviewer_id")
        .annotate(
            total=Count("interaction", distinct=True),
            today=Count("interaction", distinct=True, filter=Q(created_at__gte=_start_of_today())),
        )
    }
    reviewing_roles = [ProjectMembership.Role.REVIEWER, ProjectMembership.Role.ADMIN]
    users = get_user_model().objects.filter(
        Q(pk__in=counts) | Q(memberships__project=project, memberships__role__in=reviewing_roles)
    )
    rows = [
        ReviewerProgress(
            user_id=user.pk,
            username=user.get_username(),
            reviewed_today=counts.get(user.pk, {}).get("today", 0),
            reviewed_total=counts.get(user.pk, {}).get("total", 0),
        )
        for user in users.distinct()
    ]
    return sorted(rows, key=lambda row: (-row.reviewed_today, -row.reviewed_total, row.username))


def queue_progress_get(*, project: Project, reviewer) -> QueueProgress:
    reviewers = reviewers_progress_list(project=project)
    mine = next((row for row in reviewers if row.user_id == reviewer.pk), None)
    return QueueProgress(
        reviewed_today=mine.reviewed_today if mine else 0,
        reviewed_total=mine.reviewed_total if mine else 0,
        # Everything still waiting, the reviewer's own current item included; items other
        # reviewers hold right now are theirs to finish.
        items_left=review_queue_candidates(project=project, reviewer=reviewer).count(),
        reviewers=reviewers,
    )
