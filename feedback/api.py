from django.conf import settings
from ninja import Router, Status

from feedback.models import RatingSource
from feedback.schemas import RatingBatchIn, RatingBatchOut
from feedback.services.ratings import InteractionNotFound, ratings_submit_batch
from flywheel.api.auth import ApiKeyRequest, RatingKeyAuth, SecretKeyAuth
from flywheel.api.errors import ApiError, error_response
from flywheel.api.schemas import ErrorOut
from flywheel.models import ApiKey
from flywheel.ratelimit import client_ip, rate_limit_hit

router = Router(tags=["interactions"], auth=SecretKeyAuth())
ratings_router = Router(tags=["ratings"])


@ratings_router.post(
    "/ratings",
    auth=RatingKeyAuth(),
    response={
        201: RatingBatchOut,
        400: ErrorOut,
        401: ErrorOut,
        403: ErrorOut,
        404: ErrorOut,
        413: ErrorOut,
        429: ErrorOut,
    },
    summary='Rate interactions: one rating, or {"ratings": [...]} (up to 500)',
)
def ratings_submit(request: ApiKeyRequest, payload: RatingBatchIn):
    """Thumbs, a score from 1 to 5, a comment, a corrected answer and tags, by `rater_id`. A rater's
    new rating of an interaction replaces their earlier one (the history is kept).

    Secret keys work from servers; public keys (the widget) only from their allowed origins.
    Limited per key and client address: 429 with Retry-After beyond it.
    """
    api_key = request.api_key
    verdict = rate_limit_hit(
        bucket=f"ratings:{api_key.pk}:{client_ip(request)}",
        limit=settings.FLYWHEEL_RATING_RATE_LIMIT,
        window_seconds=settings.FLYWHEEL_RATING_RATE_WINDOW_SECONDS,
    )
    if not verdict.allowed:
        response = error_response(429, "Too many ratings; retry later.", code="rate_limited")
        response["Retry-After"] = str(verdict.retry_after_seconds)
        return response
    items = payload.ratings
    source = RatingSource.WIDGET if api_key.kind == ApiKey.Kind.PUBLIC else RatingSource.API
    try:
        ratings = ratings_submit_batch(
            project=api_key.project, ratings=[item.dict() for item in items], source=source
        )
    except InteractionNotFound as error:
        raise ApiError(404, str(error), code="interaction_not_found") from error
    return Status(201, {"ratings": ratings})
