"""The verified answers page: the project's verified answers with the questions each one served
(so that reviewers can catch a false match), and the serving policy with the match threshold in
use and where it comes from."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.core.paginator import Page, Paginator
from django.db.models import Count, OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Coalesce

from flywheel.models import Interaction, Project, ServingPolicy, VerifiedAnswer
from flywheel.selectors.retrieval import active_index_version
from flywheel.services.verified_answers import (
    DEFAULT_MATCH_THRESHOLD,
    match_threshold,
    retriever_path,
    serving_policy_get,
)

VERIFIED_ANSWERS_PAGE_SIZE = 50
# The served questions listed under each verified answer, latest first; the count is exact.
SERVED_LISTED = 20


@dataclass(frozen=True)
class VerifiedAnswerFilters:
    status: str = ""  # one of VerifiedAnswer.Status, or "" for all
    verified_answer_id: int | None = None


@dataclass(frozen=True)
class ServedQuestion:
    """A question a verified answer answered, and how close the match was."""

    interaction_id: uuid.UUID
    question: str
    created_at: datetime
    # As recorded when it was served; None when the interaction holds none.
    similarity: float | None
    # Served as approved, or given to the generator as its first passage.
    served_verbatim: bool


@dataclass(frozen=True)
class VerifiedAnswerRow:
    verified_answer: VerifiedAnswer
    served_count: int
    served_latest: list[ServedQuestion]


@dataclass(frozen=True)
class VerifiedAnswersPage:
    page: Page
    rows: list[VerifiedAnswerRow]


def _served_count() -> Coalesce:
    # A correlated count rather than a join and GROUP BY: the page stops at its LIMIT instead
    # of aggregating every verified answer of the project first.
    served = (
        Interaction.objects.filter(verified_answer=OuterRef("pk"))
        .order_by()
        .values("verified_answer")
        .annotate(count=Count("pk"))
        .values("count")
    )
    return Coalesce(Subquery(served), 0)


def _recorded_similarity() -> KeyTransform:
    """metadata["flywheel"]["verified_match"]["similarity"], read in the database so that the
    rest of each served interaction's metadata stays there."""
    return KeyTransform(
        "similarity", KeyTransform("verified_match", KeyTransform("flywheel", "metadata"))
    )


def _number(value: object) -> float | None:
    """A number read from JSON; None for anything else (a string, a bool, nothing)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def verified_answers_filtered(*, project: Project, filters: VerifiedAnswerFilters) -> QuerySet:
    """Newest approval first, each with `served_count` and, in `served_latest`, its
    SERVED_LISTED latest served interactions with their `match_similarity`."""
    verified_answers = VerifiedAnswer.objects.filter(project=project)
    if filters.status:
        verified_answers = verified_answers.filter(status=filters.status)
    if filters.verified_answer_id is not None:
        verified_answers = verified_answers.filter(pk=filters.verified_answer_id)
    # A sliced prefetch: the database numbers each verified answer's served interactions and
    # keeps the latest few of each, however many it served.
    served = (
        Interaction.objects.only(
            "id", "created_at", "query_text", "answered_from", "verified_answer_id"
        )
        .annotate(match_similarity=_recorded_similarity())
        .order_by("-created_at", "-id")[:SERVED_LISTED]
    )
    return (
        verified_answers.defer("question_embedding", "source_documents")
        .annotate(served_count=_served_count())
        .prefetch_related(Prefetch("served", queryset=served, to_attr="served_latest"))
        .order_by("-approved_at", "-id")
    )


def verified_answers_page(
    *,
    project: Project,
    filters: VerifiedAnswerFilters,
    page_number: str | int | None = None,
    size: int = VERIFIED_ANSWERS_PAGE_SIZE,
) -> VerifiedAnswersPage:
    """One page of the list: a count, the rows with their served counts, and the served
    questions of all the page's rows; three queries whatever the page holds."""
    verified_answers = verified_answers_filtered(project=project, filters=filters)
    page = Paginator(verified_answers, size).get_page(page_number)
    rows = [
        VerifiedAnswerRow(
            verified_answer=verified,
            served_count=verified.served_count,
            served_latest=[
                ServedQuestion(
                    interaction_id=interaction.id,
                    question=interaction.query_text,
                    created_at=interaction.created_at,
                    similarity=_number(interaction.match_similarity),
                    served_verbatim=(
                        interaction.answered_from == Interaction.AnsweredFrom.VERIFIED_ANSWER
                    ),
                )
                for interaction in verified.served_latest
            ],
        )
        for verified in page.object_list
    ]
    return VerifiedAnswersPage(page=page, rows=rows)


def verified_answer_status_counts(*, project: Project) -> dict[str, int]:
    """How many verified answers the project has in each status, every status present."""
    counts = dict.fromkeys(VerifiedAnswer.Status.values, 0)
    counts.update(
        VerifiedAnswer.objects.filter(project=project)
        .order_by()
        .values("status")
        .annotate(count=Count("pk"))
        .values_list("status", "count")
    )
    return counts


# ---------------------------------------------------------------------------------------------
# The serving policy


class ThresholdSource:
    MANUAL = "manual"
    CALIBRATED = "calibrated"
    DEFAULT = "default"

    LABELS = {
        MANUAL: "set by hand",
        CALIBRATED: "calibrated on the project's verified questions",
        DEFAULT: "the default, until a calibration sets one",
    }


@dataclass(frozen=True)
class CalibrationFigures:
    """What the latest calibration recorded (ServingPolicy.calibration), in display form."""

    questions: int | None
    false_match_rate: float | None
    measured_at: datetime | None
    embedding_model: str
    threshold: float | None
    # Quantiles of each verified question's similarity to its closest other verified question
    # with a different answer: where false matches would start.
    p50: float | None
    p90: float | None
    max: float | None
    note: str


@dataclass(frozen=True)
class ServingPolicySummary:
    policy: ServingPolicy
    threshold: float
    threshold_source: str
    threshold_source_label: str
    default_threshold: float
    calibration: CalibrationFigures | None
    # Why the calibration no longer fits the policy or the retriever ("" when it does).
    calibration_outdated: list[str]


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _calibration_figures(calibration: dict) -> CalibrationFigures | None:
    if not calibration:
        return None
    quantiles = calibration.get("closest_other_similarity") or {}
    questions = calibration.get("questions")
    return CalibrationFigures(
        questions=questions if isinstance(questions, int) else None,
        false_match_rate=_number(calibration.get("false_match_rate")),
        measured_at=_moment(calibration.get("measured_at")),
        embedding_model=str(calibration.get("embedding_model") or ""),
        threshold=_number(calibration.get("threshold")),
        p50=_number(quantiles.get("p50")),
        p90=_number(quantiles.get("p90")),
        max=_number(quantiles.get("max")),
        note=str(calibration.get("note") or ""),
    )


def serving_policy_summary(*, project: Project) -> ServingPolicySummary:
    """The project's serving policy, the match threshold serving uses now and where it comes
    from, and the latest calibration's figures."""
    policy = serving_policy_get(project=project)
    if policy.verified_match_threshold is not None:
        source = ThresholdSource.MANUAL
    elif policy.calibrated_threshold is not None:
        source = ThresholdSource.CALIBRATED
    else:
        source = ThresholdSource.DEFAULT
    figures = _calibration_figures(policy.calibration)
    outdated = []
    if figures is not None:
        if (
            figures.false_match_rate is not None
            and figures.false_match_rate != policy.calibration_false_match_rate
        ):
            outdated.append(
                f"it aimed at a false-match rate of {figures.false_match_rate:g}; the policy "
                f"now asks for {policy.calibration_false_match_rate:g}"
            )
        retriever = retriever_path(index_version=active_index_version(project=project))
        if figures.embedding_model and figures.embedding_model != retriever:
            outdated.append("the active index now embeds questions with another retriever")
    return ServingPolicySummary(
        policy=policy,
        threshold=match_threshold(policy),
        threshold_source=source,
        threshold_source_label=ThresholdSource.LABELS[source],
        default_threshold=DEFAULT_MATCH_THRESHOLD,
        calibration=figures,
        calibration_outdated=outdated,
    )
