"""One JSON error shape for every API endpoint — OpenAI's, so that OpenAI clients surface our
messages as they would theirs:

    {"error": {"message": "...", "type": "invalid_request_error", "code": "...", "param": ...}}
"""

import logging
import re

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from flywheel.artifacts import ArtifactStoreUnavailable
from flywheel.validation import InvalidValue

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
    503: "service_unavailable_error",
}

# How long a client should wait before retrying while the database is unreachable: about what
# a PostgreSQL restart or failover takes.
DATABASE_RETRY_AFTER_SECONDS = 5


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


# pydantic names the member of a union (or the validator) an error came from after the
# field: "content.constrained-str", "metadata.function-after[validate(), dict[str,any]]".
_TYPE_TAG = re.compile(r"[\w-]+\[.*\]|constrained-\w+|str|int|float|bool|none|list|dict")


def _location(loc) -> str:
    # ninja prefixes the source ("body", "query", "path") and the parameter's name.
    parts = [str(part) for part in loc if not _TYPE_TAG.fullmatch(str(part))]
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
            refused = error.__cause__
            if isinstance(refused, InvalidValue):
                # Parsed, but holding a value no column could store (see CheckedJsonParser).
                return error_response(
                    400, str(refused), code="invalid_value", param=refused.param or None
                )
            return error_response(400, "The request body is not valid JSON.", code="invalid_json")
        return error_response(error.status_code, str(error), code="http_error")

    api.add_exception_handler(HttpError, _http_error)

    def _unexpected(request: HttpRequest, error: Exception | type[Exception]) -> JsonResponse:
        logger.exception("Unhandled error in %s %s", request.method, request.path)
        return error_response(500, "Internal server error.", code="internal_error")

    api.add_exception_handler(Exception, _unexpected)

    # ninja picks the handler of the most specific class in the exception's MRO, so a lost
    # database connection gets these rather than the catch-all's 500.
    def _database_unavailable(
        request: HttpRequest, error: Exception | type[Exception]
    ) -> JsonResponse:
        logger.warning("Database unavailable in %s %s: %s", request.method, request.path, error)
        return database_unavailable_response()

    api.add_exception_handler(OperationalError, _database_unavailable)
    api.add_exception_handler(InterfaceError, _database_unavailable)

    def _artifact_store_unavailable(
        request: HttpRequest, error: Exception | type[Exception]
    ) -> JsonResponse:
        # A fine-tuned retriever or an adapter this process has not cached yet is in a bucket
        # that does not answer: the request may succeed unchanged once it does.
        logger.warning(
            "Artifact store unavailable in %s %s: %s", request.method, request.path, error
        )
        response = error_response(
            503,
            "The artifact store is unavailable; retry shortly.",
            code="artifact_store_unavailable",
        )
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response

    api.add_exception_handler(ArtifactStoreUnavailable, _artifact_store_unavailable)


def database_unavailable_response() -> JsonResponse:
    """503 with Retry-After: the request may succeed unchanged once PostgreSQL is back."""
    response = error_response(
        503,
        "The database is unavailable; retry shortly.",
        code="database_unavailable",
    )
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


# The errors every operation may answer, stated in the OpenAPI document so that generated
# clients and fuzzers know them: (status, description, applies to the operation).
ERROR_RESPONSES = [
    (
        400,
        "Invalid request: the message names the field (`param`); nothing was stored.",
        lambda operation: "requestBody" in operation or operation.get("parameters"),
    ),
    (401, "Missing, unknown or revoked API key.", lambda operation: "security" in operation),
    (403, "The key may not do this.", lambda operation: "security" in operation),
    (
        404,
        "Not found in the key's project.",
        lambda operation: any(p.get("in") == "path" for p in operation.get("parameters", [])),
    ),
    (413, "The request body is too large.", lambda operation: "requestBody" in operation),
    (503, "A dependency is down; retry after `Retry-After` seconds.", lambda operation: True),
]


def document_error_responses(schema: dict) -> None:
    """Adds the error responses an operation may give, with the error schema, to each
    operation of an OpenAPI document that does not declare them itself."""
    error_schema = {"$ref": "#/components/schemas/ErrorOut"}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status, description, applies in ERROR_RESPONSES:
                # ninja keys the statuses an operation declares by int: a str key beside one
                # would be a duplicate key in the JSON, which Swagger UI refuses to parse.
                if {status, str(status)} & responses.keys() or not applies(operation):
                    continue
                responses[str(status)] = {
                    "description": description,
                    "content": {"application/json": {"schema": error_schema}},
                }
