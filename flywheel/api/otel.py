"""OTLP/HTTP trace ingestion: point an OpenTelemetry exporter at
`/api/v1/otel/v1/traces` (or `OTEL_EXPORTER_OTLP_ENDPOINT` at `/api/v1/otel`) and the model
calls of GenAI spans are logged as interactions. Bodies are OTLP protobuf or OTLP JSON, gzip
or not; the answer is an ExportTraceServiceResponse in the request's encoding."""

import base64
import logging
import zlib
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from ninja import Router
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from pydantic import ValidationError

from flywheel.api.auth import ApiKeyRequest, SecretKeyAuth
from flywheel.api.errors import ApiError
from flywheel.api.schemas import InteractionIn
from flywheel.services.otel_ingest import (
    InteractionCandidate,
    otel_interactions_log,
    otel_spans_sort,
)
from flywheel.validation import InvalidValue, check_json, json_loads_checked

logger = logging.getLogger(__name__)

router = Router(tags=["opentelemetry"])

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# A whole export rejected (content capture off, say) states the first reasons, not 512.
REJECTIONS_STATED = 10
# OTLP/JSON writes these ids as hex; protobuf's JSON mapping expects base64 for bytes.
HEX_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")

OPENAPI_REQUEST_BODY = {
    "required": True,
    "description": (
        "An OTLP ExportTraceServiceRequest, as protobuf (`application/x-protobuf`) or OTLP "
        "JSON (`application/json`: ids in hex, enums as numbers); `Content-Encoding: gzip` "
        "is accepted."
    ),
    "content": {
        PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
        JSON: {
            "schema": {
                "type": "object",
                "properties": {"resourceSpans": {"type": "array", "items": {"type": "object"}}},
            }
        },
    },
}
EXPORT_RESPONSE_SCHEMA = {
    "type": "object",
    "description": "ExportTraceServiceResponse: `partialSuccess` only when spans were rejected.",
    "properties": {
        "partialSuccess": {
            "type": "object",
            "properties": {
                "rejectedSpans": {"type": "string", "description": "int64, as OTLP JSON writes"},
                "errorMessage": {"type": "string"},
            },
        }
    },
}
OPENAPI_RESPONSES = {
    200: {
        "description": (
            "Accepted. Headers count what became of the spans: "
            "`X-Flywheel-Interactions-Created`, `X-Flywheel-Spans-Ignored` (not GenAI)."
        ),
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON: {"schema": EXPORT_RESPONSE_SCHEMA},
        },
    },
    415: {
        "description": "Neither application/x-protobuf nor application/json.",
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
    },
}


@router.post(
    "/otel/v1/traces",
    auth=SecretKeyAuth(scope="log"),
    summary="Ingest OpenTelemetry GenAI spans (OTLP/HTTP) as interactions",
    openapi_extra={"requestBody": OPENAPI_REQUEST_BODY, "responses": OPENAPI_RESPONSES},
)
def otel_traces_export(request: ApiKeyRequest):
    """Each span with `gen_ai.*` attributes for a chat-like operation becomes one logged
    interaction (`source: log`), keyed by its trace and span ids so that a retried export
    stores nothing new; retrieval spans lend their `gen_ai.retrieval.documents` to the chat
    spans of their trace. Spans without `gen_ai.*` attributes are ignored. A GenAI span that
    cannot be logged (no user message, an invalid field) is counted in
    `partial_success.rejected_spans` and the message says why; the others are stored."""
    content_type = request.content_type or ""
    if content_type not in (PROTOBUF, JSON):
        raise ApiError(
            415,
            f"Send OTLP as {PROTOBUF} or {JSON}, not {content_type or 'no content type'}.",
            code="unsupported_media_type",
        )
    body = _decompressed(request.body, request.headers.get("Content-Encoding", ""))
    export = _decoded_export(body, content_type)

    sorting = otel_spans_sort(export=export)
    rejections = list(sorting.rejections)
    checked: list[InteractionCandidate] = []
    for candidate in sorting.candidates:
        try:
            fields = _interaction_checked(candidate.fields)
        except InvalidValue as problem:
            rejections.append(f"{candidate.span_label}: {problem}")
            continue
        checked.append(InteractionCandidate(span_label=candidate.span_label, fields=fields))
    result = otel_interactions_log(project=request.api_key.project, candidates=checked)
    rejections.extend(result.rejections)

    created = sum(1 for logged in result.logged if logged.created)
    logger.debug(
        "OTLP export for project %s: %d interactions created, %d already logged, "
        "%d spans rejected, %d ignored (not GenAI)",
        request.api_key.project.slug,
        created,
        len(result.logged) - created,
        len(rejections),
        sorting.ignored_spans,
    )
    response_message = ExportTraceServiceResponse()
    if rejections:
        response_message.partial_success.rejected_spans = len(rejections)
        reasons = rejections[:REJECTIONS_STATED]
        if len(rejections) > REJECTIONS_STATED:
            reasons.append(f"and {len(rejections) - REJECTIONS_STATED} more")
        response_message.partial_success.error_message = "; ".join(reasons)
    if content_type == PROTOBUF:
        response = HttpResponse(response_message.SerializeToString(), content_type=PROTOBUF)
    else:
        response = HttpResponse(json_format.MessageToJson(response_message), content_type=JSON)
    response["X-Flywheel-Interactions-Created"] = str(created)
    response["X-Flywheel-Spans-Ignored"] = str(sorting.ignored_spans)
    return response


def _decompressed(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise ApiError(
            415,
            f"Content-Encoding {encoding!r} is not supported; send gzip or none.",
            code="unsupported_content_encoding",
        )
    limit = settings.FLYWHEEL_MAX_REQUEST_BYTES
    # Read at most one byte past the limit: a small compressed body may expand enormously.
    decompressor = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        inflated = decompressor.decompress(body, limit + 1)
    except zlib.error as error:
        raise ApiError(400, "The body is not valid gzip.", code="invalid_gzip") from error
    if len(inflated) > limit:
        raise ApiError(
            413,
            f"The decompressed body is larger than {limit} bytes.",
            code="body_too_large",
        )
    if not decompressor.eof:
        raise ApiError(400, "The gzip body is truncated.", code="invalid_gzip")
    return inflated


def _decoded_export(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    export = ExportTraceServiceRequest()
    if content_type == PROTOBUF:
        try:
            export.ParseFromString(body)
        except DecodeError as error:
            raise ApiError(
                400, "The body is not an OTLP ExportTraceServiceRequest.", code="invalid_otlp"
            ) from error
        return export
    try:
        document = json_loads_checked(body)
    except InvalidValue as error:
        raise ApiError(400, str(error), code="invalid_value", param=error.param or None) from error
    except ValueError as error:
        raise ApiError(400, f"The body is not valid JSON: {error}", code="invalid_json") from error
    if not isinstance(document, dict):
        raise ApiError(400, "The body must be a JSON object.", code="invalid_otlp")
    try:
        _hex_ids_to_base64(document)
        json_format.ParseDict(document, export, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as error:
        raise ApiError(400, f"The body is not OTLP JSON: {error}", code="invalid_otlp") from error
    return export


def _hex_ids_to_base64(value: Any) -> None:
    """Rewrites OTLP/JSON's hex trace and span ids, wherever they are, as base64 in place."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if key in HEX_ID_FIELDS and isinstance(child, str):
                    try:
                        item[key] = base64.b64encode(bytes.fromhex(child)).decode()
                    except ValueError as error:
                        raise ValueError(f"{key} {child!r} is not hex") from error
                else:
                    pending.append(child)
        elif isinstance(item, list):
            pending.extend(item)


def _interaction_checked(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields as POST /api/v1/interactions would store them, or InvalidValue for the
    first rule they break. Protobuf strings may hold what no JSON body could bring to the
    schema (NUL characters, lone surrogates), hence the storage check first."""
    check_json(fields)
    try:
        return InteractionIn.model_validate(fields).model_dump()
    except ValidationError as error:
        first = error.errors()[0]
        raise InvalidValue(tuple(first["loc"]), first["msg"]) from error
