import uuid

from django.conf import settings
from ninja import Router, Status

from feedback.models import RatingSource, Review
from feedback.schemas import (
    RatingBatchIn,
    RatingBatchOut,
    ReviewListOut,
    ReviewOut,
    ReviewRevisionIn,
)
from feedback.services.ratings import InteractionNotFound, ratings_submit_batch
from feedback.services.reviews import (
    ReviewReviser,
    ReviewRevisionForbidden,
    ReviewRevisionInvalid,
    ReviewRevisionUnchanged,
    ReviewSuperseded,
    review_revise,
)
from flywheel.api.auth import ApiKeyRequest, RatingKeyAuth, SecretKeyAuth
from flywheel.api.errors import ApiError, error_response
from flywheel.api.schemas import ErrorOut
from flywheel.models import ApiKey, Interaction
from flywheel.ratelimit import client_ip, rate_limit_hit
from flywheel.services.idempotency import IdempotencyConflict

ratings_router = Router(tags=["ratings"])
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"


@ratings_router.post(
    "/ratings",
    auth=RatingKeyAuth(),
    response={
        201: RatingBatchOut,
        400: ErrorOut,
        401: ErrorOut,
        403: ErrorOut,
        404: ErrorOut,
        409: ErrorOut,
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

    An `Idempotency-Key` header (1 to 200 characters) makes a retry safe: the same ratings
    again under the key return what the first request stored and store nothing new; other
    ratings under a key already used get 409 `idempotency_conflict`.
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
    idempotency_key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 200:
        raise ApiError(
            400,
            f"The {IDEMPOTENCY_KEY_HEADER} header must have 1 to 200 characters.",
            code="invalid_idempotency_key",
            param=IDEMPOTENCY_KEY_HEADER,
        )
    items = payload.ratings
    source = RatingSource.WIDGET if api_key.kind == ApiKey.Kind.PUBLIC else RatingSource.API
    try:
        ratings = ratings_submit_batch(
            project=api_key.project,
            ratings=[item.dict() for item in items],
            source=source,
            idempotency_key=idempotency_key,
        )
    except InteractionNotFound as error:
        raise ApiError(404, str(error), code="interaction_not_found") from error
    except IdempotencyConflict as error:
        raise ApiError(409, str(error), code=error.code, param=IDEMPOTENCY_KEY_HEADER) from error
    return Status(201, {"ratings": ratings})


# ---------------------------------------------------------------------------------------------
# Reviews and their revisions. Keys belong to a project, not to a person: a revision made
# through the API is recorded as the key's (its name and prefix).

reviews_router = Router(tags=["reviews"], auth=SecretKeyAuth(scope="datasets"))


def _review_of_key_project(request: ApiKeyRequest, review_id: int) -> Review:
    review = (
        Review.objects.filter(pk=review_id, interaction__project=request.api_key.project)
        .select_related("reviewer", "interaction__project")
        .first()
    )
    if review is None:
        raise ApiError(404, f"No review {review_id} in this project.", code="not_found")
    return review


def _review_out(review: Review) -> dict:
    return {
        "id": review.pk,
        "interaction_id": review.interaction_id,
        "reviewer": review.reviewer.get_username(),
        "decision": review.decision,
        "ideal_answer": review.ideal_answer,
        "note": review.note,
        "created_at": review.created_at,
        "updated_at": review.updated_at,
        "revisions": list(review.revisions.order_by("number")),
    }


@reviews_router.get(
    "/reviews/{review_id}",
    response={200: ReviewOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="A review as it stands, with every revision",
)
def review_detail(request: ApiKeyRequest, review_id: int):
    return _review_out(_review_of_key_project(request, review_id))


@reviews_router.get(
    "/interactions/{interaction_id}/reviews",
    response={200: ReviewListOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="The reviews of an interaction, newest first (the first one counts)",
)
def interaction_reviews(request: ApiKeyRequest, interaction_id: uuid.UUID):
    if not Interaction.objects.filter(pk=interaction_id, project=request.api_key.project).exists():
        raise ApiError(404, f"No interaction {interaction_id} in this project.", code="not_found")
    reviews = (
        Review.objects.filter(interaction_id=interaction_id)
        .select_related("reviewer")
        .order_by("-created_at", "-pk")
    )
    return {"reviews": [_review_out(review) for review in reviews]}


@reviews_router.post(
    "/reviews/{review_id}/revisions",
    response={
        201: ReviewOut,
        400: ErrorOut,
        401: ErrorOut,
        403: ErrorOut,
        404: ErrorOut,
        409: ErrorOut,
        413: ErrorOut,
    },
    summary="Revise a review: a new decision, ideal answer or note (the history is kept)",
)
def review_revision_create(request: ApiKeyRequest, review_id: int, payload: ReviewRevisionIn):
    """Amends the interaction's current review. Its verified answer follows (an approval
    publishes or replaces it, a rejection withdraws it) and the interaction is curated again,
    so the next dataset version holds the revised example in place of the old one.

    400 for an invalid revision (a correction without its ideal answer), 409 when it changes
    nothing or a later review of the interaction counts instead.
    """
    review = _review_of_key_project(request, review_id)
    try:
        review = review_revise(
            review=review,
            reviser=ReviewReviser(api_key=request.api_key),
            decision=payload.decision,
            ideal_answer=payload.ideal_answer,
            note=payload.note,
        )
    except ReviewRevisionInvalid as error:
        raise ApiError(400, str(error), code=error.code, param=error.field) from error
    except ReviewRevisionForbidden as error:
        raise ApiError(403, str(error), code=error.code) from error
    except (ReviewRevisionUnchanged, ReviewSuperseded) as error:
        raise ApiError(409, str(error), code=error.code) from error
    return Status(201, _review_out(review))
