"""Reading an experiment's figures: per arm, the interactions it served (joined by the
experiment id and arm flywheel stored on them), their current ratings, the requests that
failed and the latency; and what the sequential test makes of them now."""

from dataclasses import dataclass

from django.db.models import Aggregate, Count, F, FloatField, Q, QuerySet, Sum
from django.utils import timezone

from feedback.models import Rating, Thumb
from flywheel.models import ExperimentArm, Interaction, Project, ServingFailure
from retrain.experiments.services import METRIC_SCALES
from retrain.experiments.statistics import (
    ArmHealth,
    ArmSample,
    Comparison,
    Interval,
    arm_interval,
    compare,
)
from retrain.models import Experiment

ARMS = (ExperimentArm.CONTROL.value, ExperimentArm.CANDIDATE.value)
EXPERIMENTS_LISTED = 50


class Percentile(Aggregate):
    """PostgreSQL's continuous percentile of a column, e.g. Percentile("latency_ms", 0.95)."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=float(fraction), **extra)


@dataclass(frozen=True)
class ArmFigures:
    arm: str
    interactions: int = 0
    failures: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    scored: int = 0
    score_total: float = 0.0
    score_total_of_squares: float = 0.0
    latency_p95_ms: float | None = None

    def sample(self, metric: str) -> ArmSample:
        """The observations the metric counts: thumbs (up is 1) or scores."""
        if metric == Experiment.Metric.MEAN_SCORE:
            return ArmSample(self.scored, self.score_total, self.score_total_of_squares)
        return ArmSample(self.thumbs_up + self.thumbs_down, self.thumbs_up, self.thumbs_up)

    @property
    def health(self) -> ArmHealth:
        return ArmHealth(
            requests=self.interactions + self.failures,
            failures=self.failures,
            latency_p95_ms=self.latency_p95_ms,
        )


def experiment_arm_figures(*, experiment: Experiment) -> dict[str, ArmFigures]:
    """Each arm's counts, in three grouped queries."""
    figures: dict[str, dict] = {arm: {} for arm in ARMS}
    served = (
        Interaction.objects.filter(project=experiment.project_id, experiment_id=experiment.pk)
        .values("experiment_arm")
        .annotate(count=Count("id"), p95=Percentile("latency_ms", 0.95))
    )
    for row in served:
        if row["experiment_arm"] in figures:
            figures[row["experiment_arm"]] |= {
                "interactions": row["count"],
                "latency_p95_ms": row["p95"],
            }
    rated = (
        Rating.objects.filter(
            interaction__project=experiment.project_id,
            interaction__experiment_id=experiment.pk,
        )
        .values("interaction__experiment_arm")
        .annotate(
            up=Count("id", filter=Q(thumb=Thumb.UP)),
            down=Count("id", filter=Q(thumb=Thumb.DOWN)),
            scored=Count("score"),
            total=Sum("score"),
            squares=Sum(F("score") * F("score")),
        )
    )
    for row in rated:
        if row["interaction__experiment_arm"] in figures:
            figures[row["interaction__experiment_arm"]] |= {
                "thumbs_up": row["up"],
                "thumbs_down": row["down"],
                "scored": row["scored"],
                "score_total": float(row["total"] or 0),
                "score_total_of_squares": float(row["squares"] or 0),
            }
    failed = (
        ServingFailure.objects.filter(project=experiment.project_id, experiment_id=experiment.pk)
        .values("experiment_arm")
        .annotate(count=Count("id"))
    )
    for row in failed:
        if row["experiment_arm"] in figures:
            figures[row["experiment_arm"]]["failures"] = row["count"]
    return {arm: ArmFigures(arm=arm, **values) for arm, values in figures.items()}


@dataclass(frozen=True)
class ExperimentReport:
    """An experiment's figures now: per arm, and the comparison the verdict rests on."""

    experiment: Experiment
    arms: dict[str, ArmFigures]
    intervals: dict[str, Interval]
    comparison: Comparison

    def arm_dict(self, arm: str) -> dict:
        figures = self.arms[arm]
        sample = figures.sample(self.experiment.metric)
        interval = self.intervals[arm]
        return {
            "interactions": figures.interactions,
            "ratings": sample.count,
            "thumbs_up": figures.thumbs_up,
            "thumbs_down": figures.thumbs_down,
            "scored": figures.scored,
            "metric": interval.estimate,
            "interval": [interval.low, interval.high],
            "failures": figures.failures,
            "error_rate": figures.health.error_rate,
            "latency_p95_ms": figures.latency_p95_ms,
        }

    def as_dict(self) -> dict:
        return {
            "arms": {arm: self.arm_dict(arm) for arm in ARMS},
            **self.comparison.as_dict(),
        }


def experiment_report(*, experiment: Experiment) -> ExperimentReport:
    arms = experiment_arm_figures(experiment=experiment)
    scale = METRIC_SCALES[experiment.metric]
    samples = {arm: figures.sample(experiment.metric) for arm, figures in arms.items()}
    comparison = compare(
        control=samples[ExperimentArm.CONTROL],
        candidate=samples[ExperimentArm.CANDIDATE],
        scale=scale,
        min_per_arm=experiment.min_ratings_per_arm,
        margin=experiment.no_difference_margin,
        deadline_passed=timezone.now() >= experiment.ends_at,
    )
    return ExperimentReport(
        experiment=experiment,
        arms=arms,
        intervals={arm: arm_interval(sample, scale=scale) for arm, sample in samples.items()},
        comparison=comparison,
    )


def experiments_for_project(*, project: Project) -> QuerySet[Experiment]:
    return (
        Experiment.objects.filter(project=project)
        .select_related("candidate_model_version", "candidate_index_version")
        .order_by("-started_at")
    )


def experiment_get(*, project: Project, experiment_id: int) -> Experiment | None:
    return experiments_for_project(project=project).filter(pk=experiment_id).first()


def experiment_running(*, project: Project) -> Experiment | None:
    return experiments_for_project(project=project).filter(status=Experiment.Status.RUNNING).first()
