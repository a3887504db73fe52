"""The overview page: volume, satisfaction, scores and corrections per day, per model version
and per index version."""

from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import (
    Avg,
    Case,
    CharField,
    Count,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Concat, NullIf, TruncDate

from dashboard.selectors.interactions import created_between, latest_review_decision
from feedback.models import Review, Thumb
from flywheel.models import Interaction, Project

UNKNOWN_MODEL_LABEL = "unknown"
NO_INDEX_LABEL = "no index (app-logged, or no retrieval)"


def _model_label():
    """The model version's name; for apps that log their own LLM, the model they named."""
    return Coalesce(
        "model_version__name", NullIf("model_name", Value("")), Value(UNKNOWN_MODEL_LABEL)
    )


def _index_label():
    """The index version that retrieved the passages; interactions logged by apps with their
    own retrieval, or answered without it, have none."""
    # Not Coalesce: Django's Concat turns a NULL part into "", never NULL.
    return Case(
        When(index_version__isnull=True, then=Value(NO_INDEX_LABEL)),
        default=Concat(Value("index v"), Cast("index_version__number", CharField())),
    )


def _feedback_aggregates() -> dict:
    """Per group of interactions: how many, their current ratings, and their corrections (a
    rating with a corrected answer, or a latest review that wrote the ideal answer). The join
    to ratings repeats an interaction once per rating, hence the distinct interaction counts.
    Needs the `latest_review_decision` annotation."""
    return {
        "interactions": Count("id", distinct=True),
        "thumbs_up": Count("ratings", filter=Q(ratings__thumb=Thumb.UP)),
        "thumbs_down": Count("ratings", filter=Q(ratings__thumb=Thumb.DOWN)),
        "mean_score": Avg("ratings__score"),
        # Greater than "" means non-empty; an interaction without ratings (NULL) fails it too.
        "rating_corrections": Count("ratings", filter=Q(ratings__correction__gt="")),
        "review_corrections": Count(
            "id", distinct=True, filter=Q(latest_review_decision=Review.Decision.CORRECTED)
        ),
    }


@dataclass(frozen=True)
class FeedbackFigures:
    interactions: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    mean_score: float | None = None
    rating_corrections: int = 0
    review_corrections: int = 0

    @classmethod
    def from_row(cls, row: dict) -> "FeedbackFigures":
        mean_score = row["mean_score"]
        return cls(
            interactions=row["interactions"],
            thumbs_up=row["thumbs_up"],
            thumbs_down=row["thumbs_down"],
            mean_score=None if mean_score is None else float(mean_score),
            rating_corrections=row["rating_corrections"],
            review_corrections=row["review_corrections"],
        )

    @property
    def corrections(self) -> int:
        return self.rating_corrections + self.review_corrections

    @property
    def satisfaction_percent(self) -> float | None:
        """Thumbs up among the thumbs given; None when nobody gave one."""
        thumbs = self.thumbs_up + self.thumbs_down
        return round(100 * self.thumbs_up / thumbs, 1) if thumbs else None

    @property
    def mean_score_rounded(self) -> float | None:
        return None if self.mean_score is None else round(self.mean_score, 2)


@dataclass(frozen=True)
class FeedbackSeries:
    """One line of the overview: its totals over the range and its figures day by day."""

    label: str
    totals: FeedbackFigures
    by_day: list[FeedbackFigures]

    def chart_data(self) -> dict:
        return {
            "label": self.label,
            "interactions": [figures.interactions for figures in self.by_day],
            "satisfaction_percent": [figures.satisfaction_percent for figures in self.by_day],
            "mean_score": [figures.mean_score_rounded for figures in self.by_day],
            "corrections": [figures.corrections for figures in self.by_day],
        }


@dataclass(frozen=True)
class Overview:
    days: list[date]
    overall: FeedbackSeries
    per_model: list[FeedbackSeries]
    per_index: list[FeedbackSeries]

    def chart_data(self) -> dict:
        """What the page's charts draw, as plain JSON values."""
        return {
            "days": [day.isoformat() for day in self.days],
            "overall": self.overall.chart_data(),
            "per_model": [series.chart_data() for series in self.per_model],
        }


def _series_per_label(interactions: QuerySet, label, days: list[date]) -> list[FeedbackSeries]:
    """One series per value of the `label` expression, the busiest first."""
    labelled = interactions.annotate(series_label=label)
    aggregates = _feedback_aggregates()
    totals = {
        row["series_label"]: FeedbackFigures.from_row(row)
        for row in labelled.values("series_label")
        .annotate(**aggregates)
        .order_by("-interactions", "series_label")
    }
    per_day = {
        (row["series_label"], row["day"]): FeedbackFigures.from_row(row)
        for row in labelled.values("series_label", "day").annotate(**aggregates).order_by()
    }
    empty = FeedbackFigures()
    return [
        FeedbackSeries(
            label=series_label,
            totals=series_totals,
            by_day=[per_day.get((series_label, day), empty) for day in days],
        )
        for series_label, series_totals in totals.items()
    ]


def overview_get(*, project: Project, date_from: date, date_to: date) -> Overview:
    """Interactions, satisfaction, mean score and corrections per day of the interactions'
    creation, in total, per model and per index version, for the days from `date_from` to
    `date_to`."""
    interactions = created_between(
        Interaction.objects.filter(project=project), date_from, date_to
    ).annotate(latest_review_decision=latest_review_decision(), day=TruncDate("created_at"))
    aggregates = _feedback_aggregates()
    totals = FeedbackFigures.from_row(interactions.aggregate(**aggregates))
    per_day = {
        row["day"]: FeedbackFigures.from_row(row)
        for row in interactions.values("day").annotate(**aggregates).order_by()
    }
    days = [date_from + timedelta(days=offset) for offset in range((date_to - date_from).days + 1)]
    empty = FeedbackFigures()
    return Overview(
        days=days,
        overall=FeedbackSeries(
            label="All models",
            totals=totals,
            by_day=[per_day.get(day, empty) for day in days],
        ),
        per_model=_series_per_label(interactions, _model_label(), days),
        per_index=_series_per_label(interactions, _index_label(), days),
    )
