"""Canary experiments over the API (scope `versions`): start one, follow its figures and
verdict, stop it. The rules are retrain.experiments'; refusals come back as JSON errors:
400 for a parameter out of range (naming it), 404 for an unknown experiment or candidate,
409 for a state the rules refuse (one already running, not a candidate, not running)."""

from datetime import datetime, timedelta
from typing import Literal

from ninja import Field, Query, Router, Schema, Status

from flywheel.api.auth import ApiKeyRequest, SecretKeyAuth
from flywheel.api.errors import ApiError
from flywheel.api.schemas import ErrorOut, InputSchema
from flywheel.models import IndexVersion, ModelVersion
from retrain.experiments.selectors import (
    EXPERIMENTS_LISTED,
    experiment_get,
    experiment_report,
    experiments_for_project,
)
from retrain.experiments.services import (
    ExperimentParameters,
    ExperimentRefused,
    InvalidExperimentParameters,
    experiment_start,
    experiment_stop,
)
from retrain.models import Experiment

router = Router(tags=["experiments"], auth=SecretKeyAuth(scope="versions"))
AUTH_ERRORS = {401: ErrorOut, 403: ErrorOut}


class ExperimentIn(InputSchema):
    candidate_model: str | None = Field(
        None, max_length=200, description="The name of a candidate model version."
    )
    candidate_index_version: int | None = Field(
        None, ge=1, le=2**31 - 1, description="The number of a ready index version."
    )
    candidate_share: float = Field(0.1, description="Share of the traffic, above 0, below 1.")
    metric: Literal["thumbs_up_rate", "mean_score"] = "thumbs_up_rate"
    min_ratings_per_arm: int = Field(100, ge=0, le=2**31 - 1)
    max_duration_hours: float = Field(168, description="Hours until the deadline.")
    shadow_share: float = Field(0.0, description="Share of control's traffic shadowed, 0-1.")
    auto_promote: bool = False
    stop_on_loss: bool = True
    error_rate_factor: float = 2.0
    latency_p95_factor: float = 2.0
    no_difference_margin: float | None = Field(
        None, description="Null: a twentieth of the metric's range."
    )


class ExperimentStopIn(InputSchema):
    reason: str = Field("", max_length=2000)


class ExperimentOut(Schema):
    id: int
    status: str
    verdict: str
    candidate_model: str | None
    candidate_index_version: int | None
    candidate_share: float
    shadow_share: float
    metric: str
    min_ratings_per_arm: int
    no_difference_margin: float
    auto_promote: bool
    stop_on_loss: bool
    error_rate_factor: float
    latency_p95_factor: float
    started_at: datetime
    ends_at: datetime
    started_by: str
    stopped_at: datetime | None
    stopped_by: str
    stop_reason: str
    evaluated_at: datetime | None
    arms: dict = Field(..., description="control and candidate: counts, metric, interval")
    difference: dict = Field(..., description="Candidate minus control, with its interval")
    probability_candidate_better: float | None
    likelihood_ratio: float | None
    alpha: float
    evidence: dict = Field(..., description="What the verdict rested on, and what followed")


def _experiment_out(experiment: Experiment) -> dict:
    report = experiment_report(experiment=experiment).as_dict()
    candidate_model = experiment.candidate_model_version
    candidate_index = experiment.candidate_index_version
    return {
        "id": experiment.pk,
        "status": experiment.status,
        "verdict": experiment.verdict,
        "candidate_model": candidate_model.name if candidate_model else None,
        "candidate_index_version": candidate_index.number if candidate_index else None,
        "candidate_share": experiment.candidate_share,
        "shadow_share": experiment.shadow_share,
        "metric": experiment.metric,
        "min_ratings_per_arm": experiment.min_ratings_per_arm,
        "no_difference_margin": experiment.no_difference_margin,
        "auto_promote": experiment.auto_promote,
        "stop_on_loss": experiment.stop_on_loss,
        "error_rate_factor": experiment.error_rate_factor,
        "latency_p95_factor": experiment.latency_p95_factor,
        "started_at": experiment.started_at,
        "ends_at": experiment.ends_at,
        "started_by": experiment.started_by_name,
        "stopped_at": experiment.stopped_at,
        "stopped_by": experiment.stopped_by_name,
        "stop_reason": experiment.stop_reason,
        "evaluated_at": experiment.evaluated_at,
        "arms": report["arms"],
        "difference": report["difference"],
        "probability_candidate_better": report["probability_candidate_better"],
        "likelihood_ratio": report["likelihood_ratio"],
        "alpha": report["alpha"],
        "evidence": experiment.evidence,
    }


def _experiment(request: ApiKeyRequest, experiment_id: int) -> Experiment:
    experiment = experiment_get(project=request.api_key.project, experiment_id=experiment_id)
    if experiment is None:
        raise ApiError(404, f"No experiment {experiment_id} in this project.", code="not_found")
    return experiment


def _actor(request: ApiKeyRequest) -> str:
    return f"API key {request.api_key}"


def _max_duration(hours: float) -> timedelta:
    # Beyond timedelta's range is out of the experiment's range too; the rules say so.
    return timedelta(hours=min(max(hours, -1.0), 24 * 365 * 100))


@router.post(
    "/experiments",
    response={201: ExperimentOut, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut, **AUTH_ERRORS},
    summary="Start a canary experiment: a candidate serves a share of the traffic",
)
def experiments_start(request: ApiKeyRequest, payload: ExperimentIn):
    """The candidate is a candidate model version (`candidate_model`, by name), a ready index
    version (`candidate_index_version`, by number), or both; control is production with the
    active index. People keep their arm (a hash of `user`, the rater id or the session). The
    verdict comes from the ratings of each arm's answers: see `GET /experiments/{id}`. One
    experiment runs per project at a time (409 `experiment_already_running`)."""
    project = request.api_key.project
    model_version = None
    if payload.candidate_model is not None:
        model_version = ModelVersion.objects.filter(
            project=project, name=payload.candidate_model
        ).first()
        if model_version is None:
            raise ApiError(
                404,
                f"No model version named {payload.candidate_model!r} in this project.",
                code="not_found",
                param="candidate_model",
            )
    index_version = None
    if payload.candidate_index_version is not None:
        index_version = IndexVersion.objects.filter(
            project=project, number=payload.candidate_index_version
        ).first()
        if index_version is None:
            raise ApiError(
                404,
                f"No index version {payload.candidate_index_version} in this project.",
                code="not_found",
                param="candidate_index_version",
            )
    parameters = ExperimentParameters(
        candidate_share=payload.candidate_share,
        metric=payload.metric,
        min_ratings_per_arm=payload.min_ratings_per_arm,
        max_duration=_max_duration(payload.max_duration_hours),
        shadow_share=payload.shadow_share,
        auto_promote=payload.auto_promote,
        stop_on_loss=payload.stop_on_loss,
        error_rate_factor=payload.error_rate_factor,
        latency_p95_factor=payload.latency_p95_factor,
        no_difference_margin=payload.no_difference_margin,
    )
    try:
        experiment = experiment_start(
            project=project,
            parameters=parameters,
            candidate_model_version=model_version,
            candidate_index_version=index_version,
            actor=_actor(request),
        )
    except InvalidExperimentParameters as invalid:
        raise ApiError(
            400, invalid.message, code="invalid_experiment", param=invalid.param
        ) from invalid
    except ExperimentRefused as refused:
        raise ApiError(409, refused.message, code=refused.code) from refused
    return Status(201, _experiment_out(experiment))


@router.get("/experiments", response={200: list[ExperimentOut], **AUTH_ERRORS})
def experiments_list(request: ApiKeyRequest, limit: int = Query(EXPERIMENTS_LISTED, ge=1, le=500)):
    """The project's experiments, newest first, each with its figures now."""
    experiments = experiments_for_project(project=request.api_key.project)[:limit]
    return [_experiment_out(experiment) for experiment in experiments]


@router.get(
    "/experiments/{experiment_id}", response={200: ExperimentOut, 404: ErrorOut, **AUTH_ERRORS}
)
def experiment_detail(request: ApiKeyRequest, experiment_id: int):
    """Per arm: interactions served, ratings the metric counts (thumbs up and down, scores),
    the metric with its 95% confidence sequence, failures, error rate and latency p95; the
    difference (candidate minus control) with its confidence sequence, the posterior
    probability that the candidate is better, and the verdict with its evidence."""
    return _experiment_out(_experiment(request, experiment_id))


@router.post(
    "/experiments/{experiment_id}/stop",
    response={200: ExperimentOut, 404: ErrorOut, 409: ErrorOut, **AUTH_ERRORS},
)
def experiment_stop_request(
    request: ApiKeyRequest, experiment_id: int, payload: ExperimentStopIn | None = None
):
    """All traffic goes back to production from the next request on; 409
    `experiment_not_running` when it had stopped or finished already."""
    experiment = _experiment(request, experiment_id)
    try:
        experiment = experiment_stop(
            experiment=experiment,
            reason=payload.reason if payload else "",
            actor=_actor(request),
        )
    except ExperimentRefused as refused:
        raise ApiError(409, refused.message, code=refused.code) from refused
    return _experiment_out(experiment)
