"""GET /v1/models and GET /v1/models/{id} — the names the project's models answer to, in
OpenAI's list and model shapes, so that OpenAI clients (and tools that let a user pick a model)
find them."""

from ninja import Router, Schema
from pydantic import model_serializer

from flywheel.api.auth import ApiKeyRequest, SecretKeyAuth
from flywheel.api.errors import ApiError
from flywheel.api.schemas import ErrorOut
from flywheel.models import ApiKey, Project
from flywheel.services.served_models import (
    ModelNotFound,
    ServedModel,
    served_model_get,
    served_models_list,
)

router = Router(tags=["models"])
# An app that chats needs the names as much as a tool that only reads.
MODELS_AUTH = SecretKeyAuth(scope=ApiKey.Scope.CHAT, or_scopes=(ApiKey.Scope.READ,))


class ServedModelDetail(Schema):
    """Flywheel's extension: where the name is used and what answers under it now; while an
    experiment runs, also its id (on `flywheel` and the arms) and, on an arm, the share of
    people it serves and the number of the index version it retrieves from. The experiment's
    fields are left out when none runs."""

    endpoint: str
    resolves_to: str
    status: str | None = None
    experiment_id: int | None = None
    arm: str | None = None
    traffic_share: float | None = None
    index_version: int | None = None

    @model_serializer(mode="wrap")
    def _experiment_fields_while_one_runs(self, serialize):
        serialized = serialize(self)
        if self.experiment_id is None:
            for name in ("experiment_id", "arm", "traffic_share", "index_version"):
                serialized.pop(name, None)
        return serialized


class ModelOut(Schema):
    id: str
    object: str = "model"
    created: int
    owned_by: str
    flywheel: ServedModelDetail


class ModelListOut(Schema):
    object: str = "list"
    data: list[ModelOut]


def _experiment_detail(model: ServedModel) -> dict:
    if model.experiment_id is None:
        return {}
    detail: dict = {"experiment_id": model.experiment_id}
    if model.arm is not None:
        detail |= {
            "arm": model.arm,
            "traffic_share": model.traffic_share,
            "index_version": model.index_version.number if model.index_version else None,
        }
    return detail


def _model_out(model: ServedModel, project: Project) -> ModelOut:
    return ModelOut(
        id=model.name,
        created=int(model.created.timestamp()),
        owned_by=project.slug,
        flywheel=ServedModelDetail(
            endpoint=model.endpoint,
            resolves_to=model.resolves_to,
            status=model.model_version.status if model.model_version else None,
            **_experiment_detail(model),
        ),
    )


@router.get(
    "/models",
    auth=MODELS_AUTH,
    response={200: ModelListOut, 401: ErrorOut, 403: ErrorOut},
    summary="List the models the project serves (OpenAI-compatible)",
)
def models_list(request: ApiKeyRequest):
    """`flywheel` (the production model version), `flywheel:candidate` (the newest candidate,
    while there is one), `flywheel:embedding` (the retriever of the active index, for
    `/v1/embeddings`), every model version by its name and the retriever by its name.
    `flywheel.resolves_to` names the model that answers under each name now. While a canary
    experiment runs, its two arms follow `flywheel`: `flywheel:arm:control` and
    `flywheel:arm:candidate`, each with its share of the traffic."""
    project = request.api_key.project
    return ModelListOut(
        data=[_model_out(model, project) for model in served_models_list(project=project)],
    )


@router.get(
    "/models/{path:model_id}",
    auth=MODELS_AUTH,
    response={200: ModelOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="Retrieve one model the project serves (OpenAI-compatible)",
)
def model_detail(request: ApiKeyRequest, model_id: str):
    project = request.api_key.project
    try:
        model = served_model_get(project=project, name=model_id)
    except ModelNotFound as error:
        raise ApiError(404, str(error), code="model_not_found", param="model") from error
    return _model_out(model, project)
