"""The experiments pages: the list, what a new experiment can test, and one experiment's
figures with the geometry of its two charts (each arm's metric with its interval; the
difference's confidence sequence as ratings arrived), drawn as inline SVG."""

from dataclasses import dataclass

from django.db.models import QuerySet

from flywheel.models import IndexVersion, ModelVersion, Project
from retrain.experiments.selectors import (
    ARMS,
    EXPERIMENTS_LISTED,
    ExperimentReport,
    experiment_get,
    experiment_report,
    experiments_for_project,
)
from retrain.experiments.services import METRIC_SCALES
from retrain.models import Experiment

# The charts' drawing box (SVG user units); the plot leaves room for labels on the left.
CHART_WIDTH = 600
CHART_HEIGHT = 220
PLOT_LEFT = 60
PLOT_RIGHT = 590
PLOT_TOP = 10
PLOT_BOTTOM = 190


def experiments_listed(*, project: Project) -> list[Experiment]:
    return list(experiments_for_project(project=project)[:EXPERIMENTS_LISTED])


def candidate_model_versions(*, project: Project) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(
        project=project, status=ModelVersion.Status.CANDIDATE
    ).order_by("-created_at")


def candidate_index_versions(*, project: Project) -> QuerySet[IndexVersion]:
    return IndexVersion.objects.filter(project=project, status=IndexVersion.Status.READY).order_by(
        "-number"
    )


@dataclass(frozen=True)
class ArmRow:
    """One arm's figures, and where its bar and interval lie (0-100 % of the scale)."""

    arm: str
    label: str
    figures: dict
    bar_percent: float | None
    low_percent: float | None
    high_percent: float | None


@dataclass(frozen=True)
class SequenceChart:
    """The difference's confidence sequence over the ratings: a band, the estimate's line,
    zero and the no-difference margins, in SVG coordinates."""

    band_points: str
    estimate_points: str
    zero_y: float
    margin_high_y: float
    margin_low_y: float
    y_top_label: str
    y_bottom_label: str
    x_end_label: str
    left: int = PLOT_LEFT
    right: int = PLOT_RIGHT
    top: int = PLOT_TOP
    bottom: int = PLOT_BOTTOM
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT

    @property
    def plot_width(self) -> int:
        return self.right - self.left

    @property
    def plot_height(self) -> int:
        return self.bottom - self.top


@dataclass(frozen=True)
class ExperimentDetail:
    experiment: Experiment
    report: ExperimentReport
    arms: list[ArmRow]
    difference: dict
    probability_candidate_better: float | None
    chart: SequenceChart | None
    # What followed a win under auto-promotion, in words; empty when nothing did.
    promotion: list[str]


def _percent(value: float | None, low: float, high: float) -> float | None:
    if value is None:
        return None
    return round(100 * (min(max(value, low), high) - low) / (high - low), 2)


def _sequence_chart(experiment: Experiment) -> SequenceChart | None:
    points = [point for point in experiment.history if point.get("low") is not None]
    if len(points) < 2:
        return None
    extent = max(
        experiment.no_difference_margin * 1.5,
        *(max(abs(point["low"]), abs(point["high"])) for point in points),
    )
    last_count = max(point["control"] + point["candidate"] for point in points) or 1

    def x(point) -> float:
        share = (point["control"] + point["candidate"]) / last_count
        return round(PLOT_LEFT + share * (PLOT_RIGHT - PLOT_LEFT), 1)

    def y(value: float) -> float:
        share = (extent - max(-extent, min(extent, value))) / (2 * extent)
        return round(PLOT_TOP + share * (PLOT_BOTTOM - PLOT_TOP), 1)

    upper = [f"{x(point)},{y(point['high'])}" for point in points]
    lower = [f"{x(point)},{y(point['low'])}" for point in reversed(points)]
    return SequenceChart(
        band_points=" ".join(upper + lower),
        estimate_points=" ".join(f"{x(point)},{y(point['estimate'])}" for point in points),
        zero_y=y(0.0),
        margin_high_y=y(experiment.no_difference_margin),
        margin_low_y=y(-experiment.no_difference_margin),
        y_top_label=f"+{extent:.2f}",
        y_bottom_label=f"-{extent:.2f}",
        x_end_label=f"{last_count} ratings",
    )


def _promotion_summary(experiment: Experiment) -> list[str]:
    outcome = experiment.evidence.get("promotion") or {}
    lines = []
    model = outcome.get("model_version") or {}
    if "promoted" in model:
        lines.append(f"{model['promoted']} was promoted to production.")
    if "refused" in model:
        lines.append(f"Promoting the model was refused: {model['refused']}")
    index = outcome.get("index_version") or {}
    if "activated" in index:
        lines.append(f"Index v{index['activated']} was activated.")
    if "refused" in index:
        lines.append(f"Activating the index was refused: {index['refused']}")
    return lines


def experiment_detail_get(*, project: Project, experiment_id: int) -> ExperimentDetail | None:
    experiment = experiment_get(project=project, experiment_id=experiment_id)
    if experiment is None:
        return None
    report = experiment_report(experiment=experiment)
    scale = METRIC_SCALES[experiment.metric]
    labels = {"control": "Control (production)", "candidate": "Candidate"}
    rows = []
    for arm in ARMS:
        figures = report.arm_dict(arm)
        low, high = figures["interval"]
        rows.append(
            ArmRow(
                arm=arm,
                label=labels[arm],
                figures=figures,
                bar_percent=_percent(figures["metric"], scale.low, scale.high),
                low_percent=_percent(low, scale.low, scale.high),
                high_percent=_percent(high, scale.low, scale.high),
            )
        )
    return ExperimentDetail(
        experiment=experiment,
        report=report,
        arms=rows,
        difference=report.comparison.difference.as_dict(),
        probability_candidate_better=report.comparison.probability_candidate_better,
        chart=_sequence_chart(experiment),
        promotion=_promotion_summary(experiment),
    )
