"""GET /v1/models and GET /v1/models/{id} — the names the project's models answer to, in
OpenAI's list and model shapes, so that OpenAI clients (and tools that let a user pick a model)
find them."""

from ninja import Router, Schema

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
    """Flywheel's extension: where the name is used and what answers under it now."""

    endpoint: str
    resolves_to: str
    status: str | None = None


class ModelOut(Schema):
    id: str
    object: str = "model"
    created: int
    owned_by: str
    flywheel: ServedModelDetail


class ModelListOut(Schema):
    object: str = "list"
    data: list[ModelOut]


def _model_out(model: ServedModel, project: Project) -> ModelOut:
    return ModelOut(
        id=model.name,
        created=int(model.created.timestamp()),
        owned_by=project.slug,
        flywheel=ServedModelDetail(
            endpoint=model.endpoint,
            resolves_to=model.resolves_to,
            status=model.model_version.status if model.model_version else None,
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
    `flywheel.resolves_to` names the model that answers under each name now."""
    project = request.api_key.project
    return ModelListOut(
        data=[_model_out(model, project) for model in served_models_list(project=project)]
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
