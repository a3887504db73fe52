"""One JSON error shape for every API endpoint — OpenAI's, so that OpenAI clients surface our
messages as they would theirs:

    {"error": {"message": "...", "type": "invalid_request_error", "code": "...", "param": ...}}
"""

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

logger = logging.getLogger(__name__)

TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def error_response(
    status: int, message: str, *, code: str, param: str | None = None, details=None
) -> JsonResponse:
    body = {
        "error": {
            "message": message,
            "type": TYPE_BY_STATUS.get(status, "api_error"),
            "code": code,
            "param": param,
        }
    }
    if details is not None:
        body["error"]["details"] = details
    return JsonResponse(body, status=status)


def _location(loc) -> str:
    # ninja prefixes the source ("body", "query", "path") and the parameter's name.
    parts = [str(part) for part in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    if len(parts) > 1 and parts[0] in {"payload", "body", "data"}:
        parts = parts[1:]
    return ".".join(parts)


# ninja types a handler's exception as `E | type[E]` (its `ExcHandler`); it passes the instance it
# caught, which the handlers below assert where they read it.
def _validation_error(
    request: HttpRequest, error: ValidationError | type[ValidationError]
) -> JsonResponse:
    assert isinstance(error, ValidationError)
    details = []
    for item in error.errors:
        details.append({"param": _location(item.get("loc", ())), "message": item.get("msg", "")})
    first = details[0] if details else {"param": None, "message": "invalid request"}
    message = f"{first['param']}: {first['message']}" if first["param"] else first["message"]
    return error_response(
        400, message, code="invalid_request", param=first["param"] or None, details=details
    )


def install_error_handlers(api: NinjaAPI) -> None:
    api.add_exception_handler(
        ApiError,
        lambda request, error: error_response(
            error.status, error.message, code=error.code, param=error.param
        ),
    )
    api.add_exception_handler(ValidationError, _validation_error)
    api.add_exception_handler(
        AuthenticationError,
        lambda request, error: error_response(
            401,
            "Missing API key: send it as 'Authorization: Bearer fw_sk_…'.",
            code="missing_api_key",
        ),
    )
    api.add_exception_handler(
        RequestDataTooBig,
        lambda request, error: error_response(
            413, "The request body is larger than this server accepts.", code="body_too_large"
        ),
    )
    api.add_exception_handler(
        Http404, lambda request, error: error_response(404, "Not found.", code="not_found")
    )

    def _http_error(request: HttpRequest, error: HttpError | type[HttpError]) -> JsonResponse:
        assert isinstance(error, HttpError)
        if str(error).startswith("Cannot parse request body"):
            return error_response(400, "The request body is not valid JSON.", code="invalid_json")
        return error_response(error.status_code, str(error), code="http_error")

    api.add_exception_handler(HttpError, _http_error)

    def _unexpected(request: HttpRequest, error: Exception | type[Exception]) -> JsonResponse:
        logger.exception("Unhandled error in %s %s", request.method, request.path)
        return error_response(500, "Internal server error.", code="internal_error")

    api.add_exception_handler(Exception, _unexpected)
