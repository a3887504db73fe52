"""What the curation policy makes of an interaction: the signal that counts (review,
correction, thumbs, score), the answer to train on, or why it is excluded."""

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from feedback.models import LOW_SCORE_MAX, Review
from flywheel.models import Project
from retrain.models import CurationPolicy, InstructionExample

Signal = InstructionExample.Signal
Status = InstructionExample.Status

# Looked up by the stored str (`CurationDecision.signal`): a Signal equals and hashes as its value.
QUALITY: dict[str, int] = {
    Signal.REVIEWER_CORRECTION: 50,
    Signal.REVIEWER_APPROVED: 40,
    Signal.USER_CORRECTION: 30,
    Signal.THUMBS_UP: 20,
    Signal.HIGH_SCORE: 10,
    Signal.NONE: 0,
    Signal.NEGATIVE: -10,
}


def curation_policy_get(*, project: Project) -> CurationPolicy:
    policy, _ = CurationPolicy.objects.get_or_create(project=project)
    return policy


class RatingSignal(NamedTuple):
    """What the policy reads of a rating (read in bulk, without a model instance per row)."""

    id: int
    thumb: str
    score: int | None
    correction: str
    updated_at: datetime


class ReviewSignal(NamedTuple):
    """What the policy reads of an interaction's latest review."""

    id: int
    decision: str
    ideal_answer: str


@dataclass
class CurationDecision:
    status: str
    signal: str
    target: str  # the answer to train on (for a negative one: the answer that was bad)
    exclusion_reason: str = ""
    rejected_answer: str = ""
    rating: RatingSignal | None = None
    review: ReviewSignal | None = None

    @property
    def quality(self) -> int:
        return QUALITY[self.signal]


def _excluded(signal: str, reason: str, target: str, **provenance) -> CurationDecision:
    return CurationDecision(
        status=Status.EXCLUDED,
        signal=signal,
        target=target,
        exclusion_reason=reason,
        **provenance,
    )


def curation_decide(
    *,
    question: str,
    answer: str,
    ratings: list[RatingSignal],
    review: ReviewSignal | None,
    policy: CurationPolicy,
) -> CurationDecision:
    """What the policy makes of an interaction (its question and the answer it was given). A
    review outranks end-user ratings."""
    decision = _decide_by_signal(answer=answer, ratings=ratings, review=review, policy=policy)
    if decision.status != Status.INCLUDED:
        return decision
    if len(question) > policy.max_question_chars:
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
                return _excluded(
                    Signal.NEGATIVE, "corrections not used by the policy", answer, review=review
                )
            return CurationDecision(
                status=Status.INCLUDED,
                signal=Signal.REVIEWER_CORRECTION,
                target=review.ideal_answer,
                rejected_answer=answer,
                review=review,
            )
        if policy.include_reviewer_approved:
            return CurationDecision(
                status=Status.INCLUDED,
                signal=Signal.REVIEWER_APPROVED,
                target=answer,
                review=review,
            )
        return _excluded(Signal.NONE, "approvals not used by the policy", answer, review=review)

    corrections = [r for r in ratings if r.correction.strip()]
    if corrections and policy.prefer_corrections:
        latest = max(corrections, key=lambda r: r.updated_at)
        return CurationDecision(
            status=Status.INCLUDED,
            signal=Signal.USER_CORRECTION,
            target=latest.correction.strip(),
            rejected_answer=answer,
            rating=latest,
        )
    ups = [r for r in ratings if r.thumb == "up"]
    downs = [r for r in ratings if r.thumb == "down"]
    scores = [r.score for r in ratings if r.score is not None]
    mean_score = sum(scores) / len(scores) if scores else None
    if len(downs) > len(ups) and policy.exclude_thumbs_down_without_correction:
        return _excluded(
            Signal.NEGATIVE, "thumbs down without a correction", answer, rating=downs[-1]
        )
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
