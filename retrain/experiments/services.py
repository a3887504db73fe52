"""Starting and stopping canary experiments. Starting opens the project's traffic split
(flywheel serves the candidate arm from the next request on); stopping closes it, and all
traffic is production's again on the next request. The verdict, with what follows from it, is
retrain.experiments.evaluation's."""

from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from flywheel.models import IndexVersion, ModelVersion, Project
from flywheel.selectors.retrieval import active_index_version
from flywheel.services.model_versions import model_version_production_ensure
from flywheel.services.traffic_splits import (
    TrafficSplitConflict,
    TrafficSplitInvalid,
    traffic_split_close,
    traffic_split_open,
)
from retrain.experiments.statistics import SCORES, THUMBS, Scale
from retrain.models import Experiment
from retrain.transitions import TransitionRefused

Status = Experiment.Status
Metric = Experiment.Metric

METRIC_SCALES: dict[str, Scale] = {Metric.THUMBS_UP_RATE: THUMBS, Metric.MEAN_SCORE: SCORES}
# A difference smaller than a twentieth of the metric's range counts as none unless the
# experiment says otherwise: 5 points of thumbs-up rate, 0.2 of a 1-5 score.
DEFAULT_MARGIN_SHARE_OF_RANGE = 0.05
# Below this the normal approximation the verdict rests on is too rough.
MIN_RATINGS_PER_ARM_FLOOR = 10
MAX_RATINGS_PER_ARM = 1_000_000
MAX_DURATION = timedelta(days=365)


class ExperimentRefused(TransitionRefused):
    """An experiment the rules do not allow now: one already runs, the candidate is not a
    candidate, the experiment is not running."""

    code = "experiment_refused"


class InvalidExperimentParameters(ValueError):
    """A parameter out of its range; `param` names it."""

    def __init__(self, message: str, *, param: str):
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class ExperimentParameters:
    """What an experiment is started with, before its rules are checked."""

    candidate_share: float
    metric: str = Metric.THUMBS_UP_RATE
    min_ratings_per_arm: int = 100
    max_duration: timedelta = timedelta(days=7)
    shadow_share: float = 0.0
    auto_promote: bool = False
    stop_on_loss: bool = True
    error_rate_factor: float = 2.0
    latency_p95_factor: float = 2.0
    # None: a twentieth of the metric's range.
    no_difference_margin: float | None = None

    def checked(self) -> "ExperimentParameters":
        """Itself, once every value is in its range; raises InvalidExperimentParameters."""

        def refuse(param: str, message: str):
            raise InvalidExperimentParameters(f"{param} {message}", param=param)

        if self.metric not in METRIC_SCALES:
            refuse("metric", f"must be one of {', '.join(METRIC_SCALES)}.")
        if not 0 < self.candidate_share < 1:
            refuse("candidate_share", "must be above 0 and below 1 (a share of the traffic).")
        if not 0 <= self.shadow_share <= 1:
            refuse("shadow_share", "must be from 0 (off) to 1.")
        if not MIN_RATINGS_PER_ARM_FLOOR <= self.min_ratings_per_arm <= MAX_RATINGS_PER_ARM:
            refuse(
                "min_ratings_per_arm",
                f"must be from {MIN_RATINGS_PER_ARM_FLOOR} to {MAX_RATINGS_PER_ARM:,}.",
            )
        if not timedelta(0) < self.max_duration <= MAX_DURATION:
            refuse("max_duration_hours", f"must be above 0 and at most {MAX_DURATION.days} days.")
        for param in ("error_rate_factor", "latency_p95_factor"):
            if not 1 <= getattr(self, param) <= 1000:
                refuse(param, "must be from 1 to 1000.")
        scale = METRIC_SCALES[self.metric]
        margin = self.no_difference_margin
        if margin is not None and not 0 < margin <= scale.range:
            refuse("no_difference_margin", f"must be above 0 and at most {scale.range:g}.")
        return self

    @property
    def margin(self) -> float:
        if self.no_difference_margin is not None:
            return self.no_difference_margin
        return DEFAULT_MARGIN_SHARE_OF_RANGE * METRIC_SCALES[self.metric].range


def _candidate_check(
    project: Project,
    candidate_model_version: ModelVersion | None,
    candidate_index_version: IndexVersion | None,
) -> None:
    if candidate_model_version is None and candidate_index_version is None:
        raise ExperimentRefused(
            "An experiment needs a candidate: a candidate model version, a ready index "
            "version, or both.",
            code="no_candidate",
        )
    if candidate_model_version is not None:
        if candidate_model_version.project_id != project.pk:
            raise ExperimentRefused(
                f"{candidate_model_version.name} belongs to another project.",
                code="not_a_candidate",
            )
        if candidate_model_version.status != ModelVersion.Status.CANDIDATE:
            raise ExperimentRefused(
                f"{candidate_model_version.name} is "
                f"{candidate_model_version.get_status_display().lower()}, not a candidate.",
                code="not_a_candidate",
            )
    if candidate_index_version is not None:
        if candidate_index_version.project_id != project.pk:
            raise ExperimentRefused(
                f"Index v{candidate_index_version.number} belongs to another project.",
                code="index_not_ready",
            )
        if candidate_index_version.status != IndexVersion.Status.READY:
            state = candidate_index_version.get_status_display().lower()
            raise ExperimentRefused(
                f"Index v{candidate_index_version.number} is {state}; only a ready (built, never "
                "active) index version can be a candidate.",
                code="index_not_ready",
            )


def experiment_start(
    *,
    project: Project,
    parameters: ExperimentParameters,
    candidate_model_version: ModelVersion | None = None,
    candidate_index_version: IndexVersion | None = None,
    user=None,
    actor: str = "",
) -> Experiment:
    """Start an experiment: the candidate serves `candidate_share` of the project's traffic
    from the next request on. One runs per project at a time. Raises ExperimentRefused and
    InvalidExperimentParameters."""
    parameters = parameters.checked()
    with transaction.atomic():
        # One start at a time per project, so that the check below holds until the commit.
        Project.objects.select_for_update().get(pk=project.pk)
        _candidate_check(project, candidate_model_version, candidate_index_version)
        running = Experiment.objects.filter(project=project, status=Status.RUNNING).first()
        if running is not None:
            raise ExperimentRefused(
                f"Experiment #{running.pk} is already running in this project; stop it first.",
                code="experiment_already_running",
            )
        experiment = Experiment.objects.create(
            project=project,
            candidate_model_version=candidate_model_version,
            candidate_index_version=candidate_index_version,
            control_model_version=model_version_production_ensure(project=project),
            control_index_version=active_index_version(project=project),
            candidate_share=parameters.candidate_share,
            shadow_share=parameters.shadow_share,
            metric=parameters.metric,
            min_ratings_per_arm=parameters.min_ratings_per_arm,
            no_difference_margin=parameters.margin,
            ends_at=timezone.now() + parameters.max_duration,
            auto_promote=parameters.auto_promote,
            stop_on_loss=parameters.stop_on_loss,
            error_rate_factor=parameters.error_rate_factor,
            latency_p95_factor=parameters.latency_p95_factor,
            started_by=user,
            started_by_name=user.get_username() if user is not None else actor,
        )
        try:
            traffic_split_open(
                project=project,
                experiment_id=experiment.pk,
                candidate_model_version=candidate_model_version,
                candidate_index_version=candidate_index_version,
                candidate_share=parameters.candidate_share,
                shadow_share=parameters.shadow_share,
            )
        except TrafficSplitConflict as conflict:
            raise ExperimentRefused(
                f"The project's traffic is already split: {conflict}",
                code="experiment_already_running",
            ) from conflict
        except TrafficSplitInvalid as invalid:
            raise ExperimentRefused(str(invalid), code="candidate_not_servable") from invalid
    return experiment


def experiment_end(
    experiment: Experiment, *, status: str, reason: str, by: str, verdict: str | None = None
) -> Experiment:
    """End a running experiment, locked by the caller's transaction: all traffic goes back to
    production on the next request."""
    experiment.status = status
    experiment.stopped_at = timezone.now()
    experiment.stop_reason = reason
    experiment.stopped_by_name = by
    if verdict is not None:
        experiment.verdict = verdict
    experiment.save(
        update_fields=["status", "stopped_at", "stop_reason", "stopped_by_name", "verdict"]
    )
    traffic_split_close(project=experiment.project, experiment_id=experiment.pk)
    return experiment


def experiment_stop(
    *, experiment: Experiment, reason: str = "", user=None, actor: str = ""
) -> Experiment:
    """Stop a running experiment by hand; its verdict stays as it was (none, unless it had
    reached one and kept running). Raises ExperimentRefused when it is not running."""
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if experiment.status != Status.RUNNING:
            state = experiment.get_status_display().lower()
            raise ExperimentRefused(
                f"Experiment #{experiment.pk} is not running; it is {state}.",
                code="experiment_not_running",
            )
        by = user.get_username() if user is not None else actor
        return experiment_end(
            experiment, status=Status.STOPPED, reason=reason.strip() or "Stopped by hand.", by=by
        )


def experiment_stop_running(
    *, project: Project, reason: str, by: str, only_if_comparing_indexes: bool = False
) -> Experiment | None:
    """Stop the project's running experiment, if one runs (a rollback or another change of
    production does: the control arm it was compared with is gone); the experiment stopped, or
    None. With `only_if_comparing_indexes`, only an experiment with a candidate index stops:
    when both arms read the active index, a new active index changes both alike."""
    with transaction.atomic():
        experiments = Experiment.objects.select_for_update().filter(
            project=project, status=Status.RUNNING
        )
        if only_if_comparing_indexes:
            experiments = experiments.exclude(candidate_index_version=None)
        running = experiments.first()
        if running is None:
            return None
        return experiment_end(running, status=Status.STOPPED, reason=reason, by=by)
