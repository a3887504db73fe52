"""Logging for apps that bring their own LLM: store interactions, read one back."""

import gc
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Annotated

from django.http import HttpResponse, JsonResponse
from ninja import Router
from ninja.decorators import decorate_view

from flywheel.api.auth import ApiKeyRequest, SecretKeyAuth
from flywheel.api.errors import ApiError
from flywheel.api.parser import body_validated_by
from flywheel.api.schemas import (
    ErrorOut,
    InteractionBatchIn,
    InteractionBatchOut,
    InteractionOut,
    interaction_batch_from_json,
)
from flywheel.selectors.interactions import interaction_get
from flywheel.services.idempotency import IdempotencyConflict, IdempotencyKeyRepeated
from flywheel.services.interactions import interactions_log_batch

router = Router(tags=["interactions"])


def cyclic_collector_paused(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Runs the view (its body's parsing included) without the cyclic garbage collector.

    A batch of a thousand interactions makes some 20,000 container objects, none in a cycle
    (reference counting frees them all when the request ends). With the collector running,
    those that outlive the young generations' collections pile up until they trigger a full
    collection of the whole process, a few hundred thousand objects: measured, a sixth of a
    batch's time. Paused, the batch never reaches the old generation."""

    @wraps(view)
    def paused(*args, **kwargs) -> HttpResponse:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return view(*args, **kwargs)
        finally:
            # With concurrent requests, the one that found it enabled turns it back on.
            if was_enabled:
                gc.enable()

    return paused


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
@decorate_view(cyclic_collector_paused)
def interactions_log(
    request: ApiKeyRequest,
    payload: Annotated[InteractionBatchIn, body_validated_by(interaction_batch_from_json)],
):
    """Stores all the interactions or, if any is invalid, none. An interaction whose
    `idempotency_key` was already logged with the same fields is not stored again (its id,
    `created: false`); with other fields it is refused with 409 `idempotency_conflict`. A key
    named twice in one batch is a 400."""
    try:
        logged = interactions_log_batch(
            project=request.api_key.project,
            interactions=[item.model_dump() for item in payload.interactions],
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
    # Written directly: ninja would validate a thousand results against the response schema
    # again, field by field.
    return JsonResponse(
        {
            "interactions": [
                {
                    "id": str(item.id),
                    "idempotency_key": item.idempotency_key,
                    "created": item.created,
                }
                for item in logged
            ]
        },
        status=201,
    )


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
