"""The overview page: volume, satisfaction, scores and corrections per day, per model version
and per index version."""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta

from django.db.models import Min

from feedback.models import DailyRollup, RollupChange
from flywheel.models import Project

UNKNOWN_MODEL_LABEL = "unknown"
NO_INDEX_LABEL = "no index (app-logged, or no retrieval)"


@dataclass(frozen=True)
class FeedbackFigures:
    """Sums over a group of interactions: thumbs and scores of their current ratings,
    corrections by raters (ratings with a corrected answer) and by reviewers (a latest review
    that wrote the ideal answer)."""

    interactions: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    score_sum: int = 0
    score_count: int = 0
    rating_corrections: int = 0
    reviewed: int = 0
    review_corrections: int = 0

    @classmethod
    def of_rollup(cls, rollup: dict) -> "FeedbackFigures":
        return cls(**{figure.name: rollup[figure.name] for figure in fields(cls)})

    def __add__(self, other: "FeedbackFigures") -> "FeedbackFigures":
        return FeedbackFigures(
            **{
                figure.name: getattr(self, figure.name) + getattr(other, figure.name)
                for figure in fields(self)
            }
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
    def mean_score(self) -> float | None:
        return self.score_sum / self.score_count if self.score_count else None

    @property
    def mean_score_rounded(self) -> float | None:
        mean_score = self.mean_score
        return None if mean_score is None else round(mean_score, 2)


EMPTY = FeedbackFigures()


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
    # The oldest change to these days that the rollups do not count yet; None: all counted.
    pending_since: datetime | None = None

    def chart_data(self) -> dict:
        """What the page's charts draw, as plain JSON values."""
        return {
            "days": [day.isoformat() for day in self.days],
            "overall": self.overall.chart_data(),
            "per_model": [series.chart_data() for series in self.per_model],
        }


def _model_label(rollup: dict) -> str:
    """The model version's name; for apps that log their own LLM, the model they named."""
    return rollup["model_version__name"] or rollup["model_name"] or UNKNOWN_MODEL_LABEL


def _index_label(rollup: dict) -> str:
    """The index version that retrieved the passages; interactions logged by apps with their
    own retrieval, or answered without it, have none."""
    number = rollup["index_version__number"]
    return NO_INDEX_LABEL if number is None else f"index v{number}"


def _series(label: str, per_day: dict[date, FeedbackFigures], days: list[date]) -> FeedbackSeries:
    by_day = [per_day.get(day, EMPTY) for day in days]
    return FeedbackSeries(label=label, totals=sum(by_day, EMPTY), by_day=by_day)


def _series_per_label(
    rollups: list[dict], label_of: Callable[[dict], str], days: list[date]
) -> list[FeedbackSeries]:
    """One series per label, the busiest first. Several rollup rows may share a label (a
    model version that apps also named), so they are summed."""
    per_label: dict[str, dict[date, FeedbackFigures]] = defaultdict(dict)
    for rollup in rollups:
        per_day = per_label[label_of(rollup)]
        per_day[rollup["day"]] = per_day.get(rollup["day"], EMPTY) + FeedbackFigures.of_rollup(
            rollup
        )
    series = [_series(label, per_day, days) for label, per_day in per_label.items()]
    return sorted(series, key=lambda line: (-line.totals.interactions, line.label))


def overview_get(*, project: Project, date_from: date, date_to: date) -> Overview:
    """Interactions, satisfaction, mean score and corrections per day of the interactions'
    creation (in the settings' time zone), in total, per model and per index version, for the
    days from `date_from` to `date_to`: read from the daily rollups alone, a row per day and
    model/index combination, whatever the number of interactions."""
    rollups = list(
        DailyRollup.objects.filter(project=project, day__gte=date_from, day__lte=date_to).values(
            "day",
            "model_version__name",
            "model_name",
            "index_version__number",
            *(figure.name for figure in fields(FeedbackFigures)),
        )
    )
    days = [date_from + timedelta(days=offset) for offset in range((date_to - date_from).days + 1)]
    overall: dict[date, FeedbackFigures] = {}
    for rollup in rollups:
        overall[rollup["day"]] = overall.get(rollup["day"], EMPTY) + FeedbackFigures.of_rollup(
            rollup
        )
    return Overview(
        days=days,
        overall=_series("All models", overall, days),
        per_model=_series_per_label(rollups, _model_label, days),
        per_index=_series_per_label(rollups, _index_label, days),
        pending_since=rollups_pending_since(project=project, date_from=date_from, date_to=date_to),
    )


def rollups_pending_since(*, project: Project, date_from: date, date_to: date) -> datetime | None:
    """When the oldest change to these days that the rollups have not caught up with was
    made; None when they count everything. Marks are kept per UTC day, which a day of another
    time zone overlaps on either side."""
    return RollupChange.objects.filter(
        project=project,
        utc_day__gte=date_from - timedelta(days=1),
        utc_day__lte=date_to + timedelta(days=1),
    ).aggregate(oldest=Min("marked_at"))["oldest"]
