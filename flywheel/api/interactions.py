"""Logging for apps that bring their own LLM: store interactions, read one back."""

import uuid

from ninja import Router, Status

from flywheel.api.auth import ApiKeyRequest, SecretKeyAuth
from flywheel.api.errors import ApiError
from flywheel.api.schemas import ErrorOut, InteractionBatchIn, InteractionBatchOut, InteractionOut
from flywheel.selectors.interactions import interaction_get
from flywheel.services.idempotency import IdempotencyConflict, IdempotencyKeyRepeated
from flywheel.services.interactions import interactions_log_batch

router = Router(tags=["interactions"])


@router.post(
    "/interactions",
    auth=SecretKeyAuth(scope="log"),
    response={
        201: InteractionBatchOut,
        400: ErrorOut,
        401: ErrorOut,
        403: ErrorOut,
        409: ErrorOut,
        413: ErrorOut,
    },
    summary='Log interactions from your own LLM: one, or {"interactions": [...]} (to 1000)',
)
def interactions_log(request: ApiKeyRequest, payload: InteractionBatchIn):
    """Stores all the interactions or, if any is invalid, none. An interaction whose
    `idempotency_key` was already logged with the same fields is not stored again (its id,
    `created: false`); with other fields it is refused with 409 `idempotency_conflict`. A key
    named twice in one batch is a 400."""
    try:
        logged = interactions_log_batch(
            project=request.api_key.project,
            interactions=[item.dict() for item in payload.interactions],
        )
    except IdempotencyKeyRepeated as error:
        raise ApiError(
            400,
            str(error),
            code=error.code,
            param=f"interactions.{error.index}.idempotency_key",
        ) from error
    except IdempotencyConflict as error:
        raise ApiError(
            409, str(error), code=error.code, param=f"interactions.{error.index}.idempotency_key"
        ) from error
    return Status(201, {"interactions": logged})


@router.get(
    "/interactions/{interaction_id}",
    auth=SecretKeyAuth(scope="read"),
    response={200: InteractionOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="One interaction, in full",
)
def interaction_detail(request: ApiKeyRequest, interaction_id: uuid.UUID):
    interaction = interaction_get(project=request.api_key.project, interaction_id=interaction_id)
    if interaction is None:
        raise ApiError(404, f"No interaction {interaction_id} in this project.", code="not_found")
    return interaction
