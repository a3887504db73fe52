from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

from django.http import StreamingHttpResponse
from ninja import Query, Router, Status

from flywheel.api.auth import ApiKeyRequest, SecretKeyAuth
from flywheel.api.errors import ApiError
from flywheel.api.schemas import ErrorOut
from flywheel.models import EmbeddingModelVersion, IndexVersion, ModelVersion, Project
from flywheel.selectors.retrieval import active_index_version
from retrain.curation.policy import curation_policy_get
from retrain.datasets.exports import EmptyExport, dataset_export_file
from retrain.datasets.snapshot import dataset_snapshot, dataset_version_eval_shortfall
from retrain.jobs.lifecycle import InvalidJobParameters, job_cancel, job_create
from retrain.models import DatasetVersion, Job
from retrain.promotion import (
    embedding_model_version_promote,
    embedding_model_version_rollback,
    index_version_activate,
    index_version_rollback,
    model_version_promote,
    model_version_rollback,
)
from retrain.schemas import (
    DatasetSnapshotOut,
    DatasetVersionOut,
    EmbeddingModelRollbackOut,
    EmbeddingModelVersionOut,
    IndexVersionOut,
    JobIn,
    JobOut,
    ModelVersionOut,
    PromotionIn,
)
from retrain.transitions import TransitionRefused

router = Router(tags=["datasets"], auth=SecretKeyAuth(scope="datasets"))


def _version(request: ApiKeyRequest, version_id: int) -> DatasetVersion:
    version = DatasetVersion.objects.filter(project=request.api_key.project, pk=version_id).first()
    if version is None:
        raise ApiError(404, f"No dataset version {version_id} in this project.", code="not_found")
    return version


def _versions_out(project: Project, versions: Iterable[DatasetVersion]) -> list[DatasetVersionOut]:
    """Each version with what its eval split is worth to the promotion gate under the
    project's current policy."""
    needed = curation_policy_get(project=project).min_eval_examples
    return [
        DatasetVersionOut.from_orm(version).model_copy(
            update={
                "eval_examples_needed": needed,
                "eval_warning": dataset_version_eval_shortfall(
                    version=version, min_eval_examples=needed
                ),
            }
        )
        for version in versions
    ]


@router.post(
    "/datasets",
    response={200: DatasetSnapshotOut, 201: DatasetSnapshotOut, 401: ErrorOut, 403: ErrorOut},
    summary="Snapshot the curated examples into a dataset version",
)
def datasets_snapshot(request: ApiKeyRequest):
    """A new immutable version when the examples changed (201); otherwise the version that
    already holds exactly these examples (200)."""
    project = request.api_key.project
    version, created = dataset_snapshot(project=project, trigger=DatasetVersion.Trigger.API)
    [version_out] = _versions_out(project, [version])
    return Status(201 if created else 200, {"created": created, "dataset_version": version_out})


@router.get("/datasets", response={200: list[DatasetVersionOut], 401: ErrorOut, 403: ErrorOut})
def datasets_list(request: ApiKeyRequest):
    project = request.api_key.project
    return _versions_out(
        project, DatasetVersion.objects.filter(project=project).order_by("-number")
    )


@router.get(
    "/datasets/{version_id}",
    response={200: DatasetVersionOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
)
def dataset_detail(request: ApiKeyRequest, version_id: int):
    [version_out] = _versions_out(request.api_key.project, [_version(request, version_id)])
    return version_out


@router.get(
    "/datasets/{version_id}/export",
    response={200: None, 400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="Download a version as JSON lines or Parquet",
)
def dataset_export(
    request: ApiKeyRequest,
    version_id: int,
    format: Literal["chat", "prompt_completion", "dpo", "alpaca"] = "chat",
    split: Literal["train", "eval", "all"] = "train",
    file: Literal["jsonl", "parquet"] = "jsonl",
):
    """TRL's dataset formats, which its trainers take unchanged: `chat` ({"messages": [...]})
    and `prompt_completion` (prompt messages, completion [assistant message]) for SFTTrainer,
    `dpo` (prompt messages, chosen and rejected [assistant message]) for DPOTrainer; and
    `alpaca` (instruction/input/output/system), which is not a TRL format. `file=parquet`
    declares the `datasets` features in the file. A split without rows has no export (404
    `empty_split`): an empty file would not load as a dataset."""
    version = _version(request, version_id)
    try:
        export = dataset_export_file(
            version=version, export_format=format, split=split, file_type=file
        )
    except EmptyExport as error:
        raise ApiError(404, str(error), code="empty_split") from error
    response = StreamingHttpResponse(export.content, content_type=export.content_type)
    response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
    return response


jobs_router = Router(tags=["jobs and versions"])
AUTH_ERRORS = {401: ErrorOut, 403: ErrorOut}
JOBS = SecretKeyAuth(scope="jobs")
READ = SecretKeyAuth(scope="read")
VERSIONS = SecretKeyAuth(scope="versions")


@contextmanager
def _refusal_as_conflict() -> Iterator[None]:
    """A switch the rules refuse is a 409 whose code names the rule."""
    try:
        yield
    except TransitionRefused as refused:
        raise ApiError(409, refused.message, code=refused.code) from refused


def _actor(request: ApiKeyRequest) -> str:
    return f"API key {request.api_key}"


def _job(request: ApiKeyRequest, job_id: int) -> Job:
    job = Job.objects.filter(project=request.api_key.project, pk=job_id).first()
    if job is None:
        raise ApiError(404, f"No job {job_id} in this project.", code="not_found")
    return job


@jobs_router.post(
    "/jobs",
    auth=JOBS,
    response={202: JobOut, 400: ErrorOut, 409: ErrorOut, **AUTH_ERRORS},
    summary="Start a job: index_refresh, lora_training, retriever_training, evaluation, "
    "dataset_snapshot or recuration",
)
def jobs_start(request: ApiKeyRequest, payload: JobIn):
    """Parameters per kind — lora_training: dataset_version (number; default a fresh
    snapshot), r, lora_alpha, lora_dropout, target_modules, learning_rate, epochs, max_steps,
    batch_size, max_length, evaluate, auto_promote; evaluation: model_version (id),
    max_examples, max_new_tokens, golden_set, auto_promote; index_refresh: activate,
    golden_set; retriever_training: eval_fraction, min_pairs, auto_promote, margin, epochs,
    max_steps, batch_size, learning_rate, warmup_ratio, seed; recuration (none; one at a
    time: 409 `job_already_running` while one is queued or running)."""
    try:
        with _refusal_as_conflict():
            job = job_create(
                project=request.api_key.project,
                kind=payload.kind,
                trigger=Job.Trigger.API,
                parameters=payload.parameters,
            )
    except InvalidJobParameters as error:
        raise ApiError(400, str(error), code="invalid_job") from error
    return Status(202, job)


@jobs_router.get("/jobs", auth=JOBS, response={200: list[JobOut], 401: ErrorOut, 403: ErrorOut})
def jobs_list(request: ApiKeyRequest, limit: int = Query(50, ge=1, le=500)):
    return Job.objects.filter(project=request.api_key.project).order_by("-created_at")[:limit]


@jobs_router.get(
    "/jobs/{job_id}", auth=JOBS, response={200: JobOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut}
)
def job_detail(request: ApiKeyRequest, job_id: int):
    return _job(request, job_id)


@jobs_router.post(
    "/jobs/{job_id}/cancel",
    auth=JOBS,
    response={200: JobOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
)
def job_cancel_request(request: ApiKeyRequest, job_id: int):
    """A queued job is cancelled at once; a running one stops at its next step."""
    by = f"API key {request.api_key.name} ({request.api_key.display_prefix}…)"
    return job_cancel(job=_job(request, job_id), by=by)


@jobs_router.get(
    "/model-versions",
    auth=READ,
    response={200: list[ModelVersionOut], 401: ErrorOut, 403: ErrorOut},
)
def model_versions_list(request: ApiKeyRequest):
    return ModelVersion.objects.filter(project=request.api_key.project).order_by("-created_at")


@jobs_router.post(
    "/model-versions/{version_id}/promote",
    auth=VERSIONS,
    response={200: ModelVersionOut, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut, **AUTH_ERRORS},
)
def model_version_promote_request(
    request: ApiKeyRequest, version_id: int, payload: PromotionIn | None = None
):
    """Promotion needs evidence: the version's evaluation decided `promote`, or the body
    gives the reason for promoting it by hand (`{"reason": "…"}`); otherwise 409
    `promotion_reason_required`. Who, when and why are kept in its `metrics.promotion`."""
    version = ModelVersion.objects.filter(project=request.api_key.project, pk=version_id).first()
    if version is None:
        raise ApiError(404, f"No model version {version_id} in this project.", code="not_found")
    with _refusal_as_conflict():
        return model_version_promote(
            version=version, reason=payload.reason if payload else "", actor=_actor(request)
        )


@jobs_router.post(
    "/model-versions/rollback",
    auth=VERSIONS,
    response={200: ModelVersionOut, 409: ErrorOut, **AUTH_ERRORS},
)
def model_version_rollback_request(request: ApiKeyRequest):
    """Production goes back to the version that was production before."""
    with _refusal_as_conflict():
        return model_version_rollback(project=request.api_key.project, actor=_actor(request))


@jobs_router.get(
    "/index-versions",
    auth=READ,
    response={200: list[IndexVersionOut], 401: ErrorOut, 403: ErrorOut},
)
def index_versions_list(request: ApiKeyRequest):
    return IndexVersion.objects.filter(project=request.api_key.project).order_by("-number")


@jobs_router.post(
    "/index-versions/{version_id}/activate",
    auth=VERSIONS,
    response={200: IndexVersionOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
)
def index_version_activate_request(request: ApiKeyRequest, version_id: int):
    version = IndexVersion.objects.filter(project=request.api_key.project, pk=version_id).first()
    if version is None:
        raise ApiError(404, f"No index version {version_id} in this project.", code="not_found")
    with _refusal_as_conflict():
        return index_version_activate(version=version)


@jobs_router.post(
    "/index-versions/rollback",
    auth=VERSIONS,
    response={200: IndexVersionOut, 409: ErrorOut, **AUTH_ERRORS},
)
def index_version_rollback_request(request: ApiKeyRequest):
    with _refusal_as_conflict():
        return index_version_rollback(project=request.api_key.project)


@jobs_router.get(
    "/embedding-model-versions",
    auth=READ,
    response={200: list[EmbeddingModelVersionOut], **AUTH_ERRORS},
)
def embedding_model_versions_list(request: ApiKeyRequest):
    """The project's retrievers (embedding models fine-tuned on feedback), newest first; none
    in production means the bundled model serves."""
    return EmbeddingModelVersion.objects.filter(project=request.api_key.project).order_by(
        "-created_at"
    )


@jobs_router.post(
    "/embedding-model-versions/{version_id}/promote",
    auth=VERSIONS,
    response={200: EmbeddingModelVersionOut, 404: ErrorOut, **AUTH_ERRORS},
)
def embedding_model_version_promote_request(request: ApiKeyRequest, version_id: int):
    """Make it the production retriever. Retrieval switches with the index: the most recent
    index it built is activated, or an index refresh is queued to build one."""
    version = EmbeddingModelVersion.objects.filter(
        project=request.api_key.project, pk=version_id
    ).first()
    if version is None:
        raise ApiError(
            404, f"No embedding model version {version_id} in this project.", code="not_found"
        )
    return embedding_model_version_promote(version=version, trigger=Job.Trigger.API)


@jobs_router.post(
    "/embedding-model-versions/rollback",
    auth=VERSIONS,
    response={200: EmbeddingModelRollbackOut, 409: ErrorOut, **AUTH_ERRORS},
)
def embedding_model_version_rollback_request(request: ApiKeyRequest):
    """The retriever goes back to the one in production before (null: the bundled model),
    with an index it built."""
    project = request.api_key.project
    with _refusal_as_conflict():
        restored = embedding_model_version_rollback(project=project, trigger=Job.Trigger.API)
    active = active_index_version(project=project)
    return {"restored": restored, "active_index_version_id": active.pk if active else None}
