from django.http import HttpRequest, HttpResponse

from flywheel.api.errors import error_response
from flywheel.models import ApiKey
from flywheel.services.api_keys import normalise_origin

# Endpoints a browser on another origin may call (with a public key): the widget's.
CROSS_ORIGIN_PATHS = ("/api/v1/ratings",)


def origin_allowed_for_public_keys(origin: str) -> bool:
    return ApiKey.objects.filter(
        kind=ApiKey.Kind.PUBLIC,
        revoked_at__isnull=True,
        allowed_origins__contains=[normalise_origin(origin)],
    ).exists()


class PublicKeyCorsMiddleware:
    """CORS for the widget's endpoints, answered only for origins that some active public key
    allows. Whether *this* key may be used from the origin is the authentication's call."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(CROSS_ORIGIN_PATHS):
            return self.get_response(request)
        origin = request.headers.get("Origin", "")
        allowed = bool(origin) and origin_allowed_for_public_keys(origin)
        is_preflight = (
            request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        )
        if is_preflight:
            response = (
                HttpResponse(status=204)
                if allowed
                else error_response(403, "Origin not allowed.", code="origin_not_allowed")
            )
        else:
            response = self.get_response(request)
        if allowed:
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, Idempotency-Key"
            )
            response["Access-Control-Expose-Headers"] = "Retry-After"
            response["Access-Control-Max-Age"] = "600"
        response["Vary"] = "Origin"
        return response


# Where every answer is JSON in OpenAI's error shape, whichever layer refused the request.
JSON_API_PATHS = ("/v1/", "/api/v1/")


class ApiMethodNotAllowedMiddleware:
    """django-ninja answers a known path called with the wrong method by a bare 405 with no
    JSON body; API clients get the same error shape as for every other refusal, with the
    allowed methods named in the message and in `Allow`."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code != 405 or not request.path.startswith(JSON_API_PATHS):
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        allowed = response.get("Allow", "")
        refused = error_response(
            405,
            f"{request.method} is not allowed on {request.path}"
            + (f"; use {allowed}." if allowed else "."),
            code="method_not_allowed",
        )
        if allowed:
            refused["Allow"] = allowed
        return refused
