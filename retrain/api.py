from typing import Literal

from django.http import StreamingHttpResponse
from ninja import Query, Router, Status

from flywheel.api.auth import ApiKeyRequest, SecretKeyAuth
from flywheel.api.errors import ApiError
from flywheel.api.schemas import ErrorOut
from flywheel.models import EmbeddingModelVersion, IndexVersion, ModelVersion
from flywheel.selectors.retrieval import active_index_version
from retrain.datasets.exports import dataset_export_lines
from retrain.datasets.snapshot import dataset_snapshot
from retrain.jobs.lifecycle import InvalidJobParameters, job_cancel, job_create
from retrain.models import DatasetVersion, Job
from retrain.promotion import (
    NothingToRollBack,
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
)

router = Router(tags=["datasets"], auth=SecretKeyAuth())


def _version(request: ApiKeyRequest, version_id: int) -> DatasetVersion:
    version = DatasetVersion.objects.filter(project=request.api_key.project, pk=version_id).first()
    if version is None:
        raise ApiError(404, f"No dataset version {version_id} in this project.", code="not_found")
    return version


@router.post(
    "/datasets",
    response={200: DatasetSnapshotOut, 201: DatasetSnapshotOut, 401: ErrorOut, 403: ErrorOut},
    summary="Snapshot the curated examples into a dataset version",
)
def datasets_snapshot(request: ApiKeyRequest):
    """A new immutable version when the examples changed (201); otherwise the version that
    already holds exactly these examples (200)."""
    version, created = dataset_snapshot(
        project=request.api_key.project, trigger=DatasetVersion.Trigger.API
    )
    return Status(201 if created else 200, {"created": created, "dataset_version": version})


@router.get("/datasets", response={200: list[DatasetVersionOut], 401: ErrorOut, 403: ErrorOut})
def datasets_list(request: ApiKeyRequest):
    return DatasetVersion.objects.filter(project=request.api_key.project).order_by("-number")


@router.get(
    "/datasets/{version_id}",
    response={200: DatasetVersionOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
)
def dataset_detail(request: ApiKeyRequest, version_id: int):
    return _version(request, version_id)


@router.get(
    "/datasets/{version_id}/export",
    response={200: None, 400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="Download a version as JSON lines",
)
def dataset_export(
    request: ApiKeyRequest,
    version_id: int,
    format: Literal["chat", "alpaca", "dpo"] = "chat",
    split: Literal["train", "eval", "all"] = "train",
):
    """`chat` ({"messages": [...]}) and `alpaca` (instruction/input/output) for supervised
    fine-tuning; `dpo` (prompt/chosen/rejected, conversational) for preference training."""
    version = _version(request, version_id)
    response = StreamingHttpResponse(
        dataset_export_lines(version=version, export_format=format, split=split),
        content_type="application/x-ndjson",
    )
    filename = f"{version.project.slug}-dataset-v{version.number}-{format}-{split}.jsonl"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


jobs_router = Router(tags=["jobs and versions"], auth=SecretKeyAuth())
AUTH_ERRORS = {401: ErrorOut, 403: ErrorOut}


def _job(request: ApiKeyRequest, job_id: int) -> Job:
    job = Job.objects.filter(project=request.api_key.project, pk=job_id).first()
    if job is None:
        raise ApiError(404, f"No job {job_id} in this project.", code="not_found")
    return job


@jobs_router.post(
    "/jobs",
    response={202: JobOut, 400: ErrorOut, **AUTH_ERRORS},
    summary="Start a job: index_refresh, lora_training, retriever_training, evaluation or "
    "dataset_snapshot",
)
def jobs_start(request: ApiKeyRequest, payload: JobIn):
    """Parameters per kind — lora_training: dataset_version (number; default a fresh
    snapshot), r, lora_alpha, lora_dropout, target_modules, learning_rate, epochs, max_steps,
    batch_size, max_length, evaluate, auto_promote; evaluation: model_version (id),
    max_examples, max_new_tokens, golden_set, auto_promote; index_refresh: activate,
    golden_set; retriever_training: eval_fraction, min_pairs, auto_promote, margin, epochs,
    max_steps, batch_size, learning_rate, warmup_ratio, seed."""
    try:
        job = job_create(
            project=request.api_key.project,
            kind=payload.kind,
            trigger=Job.Trigger.API,
            parameters=payload.parameters,
        )
    except InvalidJobParameters as error:
        raise ApiError(400, str(error), code="invalid_job") from error
    return Status(202, job)


@jobs_router.get("/jobs", response={200: list[JobOut], 401: ErrorOut, 403: ErrorOut})
def jobs_list(request: ApiKeyRequest, limit: int = Query(50, ge=1, le=500)):
    return Job.objects.filter(project=request.api_key.project).order_by("-created_at")[:limit]


@jobs_router.get(
    "/jobs/{job_id}", response={200: JobOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut}
)
def job_detail(request: ApiKeyRequest, job_id: int):
    return _job(request, job_id)


@jobs_router.post(
    "/jobs/{job_id}/cancel", response={200: JobOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut}
)
def job_cancel_request(request: ApiKeyRequest, job_id: int):
    """A queued job is cancelled at once; a running one stops at its next step."""
    return job_cancel(job=_job(request, job_id))


@jobs_router.get(
    "/model-versions", response={200: list[ModelVersionOut], 401: ErrorOut, 403: ErrorOut}
)
def model_versions_list(request: ApiKeyRequest):
    return ModelVersion.objects.filter(project=request.api_key.project).order_by("-created_at")


@jobs_router.post(
    "/model-versions/{version_id}/promote",
    response={200: ModelVersionOut, 404: ErrorOut, **AUTH_ERRORS},
)
def model_version_promote_request(request: ApiKeyRequest, version_id: int):
    version = ModelVersion.objects.filter(project=request.api_key.project, pk=version_id).first()
    if version is None:
        raise ApiError(404, f"No model version {version_id} in this project.", code="not_found")
    return model_version_promote(version=version)


@jobs_router.post(
    "/model-versions/rollback", response={200: ModelVersionOut, 409: ErrorOut, **AUTH_ERRORS}
)
def model_version_rollback_request(request: ApiKeyRequest):
    """Production goes back to the version that was production before."""
    restored = model_version_rollback(project=request.api_key.project)
    if restored is None:
        raise ApiError(409, "There is no earlier production version.", code="nothing_to_restore")
    return restored


@jobs_router.get(
    "/index-versions", response={200: list[IndexVersionOut], 401: ErrorOut, 403: ErrorOut}
)
def index_versions_list(request: ApiKeyRequest):
    return IndexVersion.objects.filter(project=request.api_key.project).order_by("-number")


@jobs_router.post(
    "/index-versions/{version_id}/activate",
    response={200: IndexVersionOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
)
def index_version_activate_request(request: ApiKeyRequest, version_id: int):
    version = IndexVersion.objects.filter(project=request.api_key.project, pk=version_id).first()
    if version is None:
        raise ApiError(404, f"No index version {version_id} in this project.", code="not_found")
    if version.status == IndexVersion.Status.BUILDING:
        raise ApiError(409, "This index version is still being built.", code="not_ready")
    return index_version_activate(version=version)


@jobs_router.post(
    "/index-versions/rollback", response={200: IndexVersionOut, 409: ErrorOut, **AUTH_ERRORS}
)
def index_version_rollback_request(request: ApiKeyRequest):
    restored = index_version_rollback(project=request.api_key.project)
    if restored is None:
        raise ApiError(409, "There is no earlier index version.", code="nothing_to_restore")
    return restored


@jobs_router.get(
    "/embedding-model-versions", response={200: list[EmbeddingModelVersionOut], **AUTH_ERRORS}
)
def embedding_model_versions_list(request: ApiKeyRequest):
    """The project's retrievers (embedding models fine-tuned on feedback), newest first; none
    in production means the bundled model serves."""
    return EmbeddingModelVersion.objects.filter(project=request.api_key.project).order_by(
        "-created_at"
    )


@jobs_router.post(
    "/embedding-model-versions/{version_id}/promote",
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
    response={200: EmbeddingModelRollbackOut, 409: ErrorOut, **AUTH_ERRORS},
)
def embedding_model_version_rollback_request(request: ApiKeyRequest):
    """The retriever goes back to the one in production before (null: the bundled model),
    with an index it built."""
    project = request.api_key.project
    try:
        restored = embedding_model_version_rollback(project=project, trigger=Job.Trigger.API)
    except NothingToRollBack as error:
        raise ApiError(409, str(error), code="nothing_to_restore") from error
    active = active_index_version(project=project)
    return {"restored": restored, "active_index_version_id": active.pk if active else None}
