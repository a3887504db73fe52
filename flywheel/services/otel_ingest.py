"""Interactions from OpenTelemetry traces: an app instrumented with the OpenTelemetry GenAI
semantic conventions (e.g. opentelemetry-instrumentation-openai-v2) exports its spans to
Flywheel, and each model call becomes a logged interaction.

A span is a GenAI span when it carries `gen_ai.*` attributes. Chat-like operations (chat,
text completion, content generation, agent invocation) become interactions; a retrieval span
lends its documents to the chat spans of its trace in the same export; every other span is
ignored. The prompt and answer are read from whichever form the instrumentation used:

- the `gen_ai.input.messages` / `gen_ai.output.messages` / `gen_ai.system_instructions`
  attributes (the current conventions; openai-v2 sets them with content capture `span_only`
  or `span_and_event`), also inside a `gen_ai.client.inference.operation.details` span event;
- the per-message span events of the earlier conventions (`gen_ai.system.message`,
  `gen_ai.user.message`, `gen_ai.assistant.message`, `gen_ai.tool.message`, `gen_ai.choice`);
- the `gen_ai.prompt` / `gen_ai.completion` attributes of `gen_ai.content.prompt` /
  `gen_ai.content.completion` events, and the flattened `gen_ai.prompt.{i}.role|content`
  attributes some instrumentations set.

The span's trace and span ids are the interaction's idempotency key, so an exporter's retry
stores nothing new.
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from flywheel.models import Project
from flywheel.services.idempotency import IdempotencyConflict
from flywheel.services.interactions import LoggedInteraction, interactions_log_batch

# Operations whose spans are a question answered by a model.
ANSWERING_OPERATIONS = {"chat", "text_completion", "generate_content", "invoke_agent"}
RETRIEVAL_OPERATION = "retrieval"
MESSAGE_ROLES = {"system", "developer", "user", "assistant", "tool"}
# Earlier conventions: one span event per prompt message.
MESSAGE_EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
IDEMPOTENCY_KEY_PREFIX = "otel"


def any_value_to_python(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value_to_python(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_to_dict(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def attributes_to_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {attribute.key: any_value_to_python(attribute.value) for attribute in attributes}


@dataclass
class InteractionCandidate:
    """A GenAI span turned into the fields of a logged interaction (what POST
    /api/v1/interactions takes), not yet checked against that endpoint's rules."""

    span_label: str
    fields: dict[str, Any]


@dataclass
class SpanSorting:
    candidates: list[InteractionCandidate] = field(default_factory=list)
    # Spans with no gen_ai.* attribute: not ours to log.
    ignored_spans: int = 0
    # GenAI spans that cannot become an interaction, with the reason for each.
    rejections: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TraceLogResult:
    logged: list[LoggedInteraction]
    rejections: list[str]


def otel_spans_sort(*, export: ExportTraceServiceRequest) -> SpanSorting:
    """Every span of an OTLP export, sorted into interactions to log, ignored spans and
    rejected spans. GenAI spans of other operations (embeddings, tool calls) log nothing,
    and a retrieval span only lends its documents."""
    sorting = SpanSorting()
    answering: list[tuple[Span, dict[str, Any], dict[str, Any]]] = []
    documents_by_trace: dict[bytes, list[dict[str, Any]]] = {}
    for resource_spans in export.resource_spans:
        resource = attributes_to_dict(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = attributes_to_dict(span.attributes)
                if not any(key.startswith("gen_ai.") for key in attributes):
                    sorting.ignored_spans += 1
                    continue
                operation = str(attributes.get("gen_ai.operation.name") or "chat")
                if operation in ANSWERING_OPERATIONS:
                    answering.append((span, attributes, resource))
                elif operation == RETRIEVAL_OPERATION:
                    documents_by_trace.setdefault(span.trace_id, []).extend(
                        _retrieved_documents(attributes)
                    )
    seen_keys: set[str] = set()
    for span, attributes, resource in answering:
        key = span_idempotency_key(span)
        if key in seen_keys:
            # The same span twice in one export: a batching exporter's repeat, stored once.
            continue
        seen_keys.add(key)
        label = f"span {span.trace_id.hex()}/{span.span_id.hex()} ({span.name or 'unnamed'})"
        fields = _interaction_fields(
            span,
            attributes=attributes,
            resource=resource,
            retrieved=documents_by_trace.get(span.trace_id, []),
        )
        if not any(message["role"] == "user" for message in fields["messages"]):
            sorting.rejections.append(
                f"{label}: no user message; turn on content capture "
                "(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=span_only)"
            )
            continue
        sorting.candidates.append(InteractionCandidate(span_label=label, fields=fields))
    return sorting


def otel_interactions_log(
    *, project: Project, candidates: list[InteractionCandidate]
) -> TraceLogResult:
    """Log the interactions of checked spans through the interaction log. A span sent again
    with the same content is found by its key and not stored again; one whose key is stored
    with other content is rejected (the other spans are still logged)."""
    pending = list(candidates)
    rejections: list[str] = []
    while pending:
        try:
            logged = interactions_log_batch(
                project=project, interactions=[candidate.fields for candidate in pending]
            )
        except IdempotencyConflict as conflict:
            assert conflict.index is not None
            refused = pending.pop(conflict.index)
            rejections.append(
                f"{refused.span_label}: already logged with other content; a span's trace and "
                "span ids must name one model call"
            )
            continue
        return TraceLogResult(logged=logged, rejections=rejections)
    return TraceLogResult(logged=[], rejections=rejections)


def span_idempotency_key(span: Span) -> str:
    return f"{IDEMPOTENCY_KEY_PREFIX}:{span.trace_id.hex()}:{span.span_id.hex()}"


def _interaction_fields(
    span: Span,
    *,
    attributes: dict[str, Any],
    resource: dict[str, Any],
    retrieved: list[dict[str, Any]],
) -> dict[str, Any]:
    messages, response = _conversation(span, attributes)
    started = span.start_time_unix_nano
    ended = span.end_time_unix_nano
    context = {**resource, **attributes}
    otel_metadata = {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "span_name": span.name,
        "operation": attributes.get("gen_ai.operation.name") or "chat",
    }
    for name, attribute in (
        ("provider", "gen_ai.provider.name"),
        ("system", "gen_ai.system"),
        ("request_model", "gen_ai.request.model"),
        ("response_id", "gen_ai.response.id"),
        ("finish_reasons", "gen_ai.response.finish_reasons"),
        ("service_name", "service.name"),
    ):
        if context.get(attribute) not in (None, "", []):
            otel_metadata[name] = context[attribute]
    if span.status.code == span.status.STATUS_CODE_ERROR:
        otel_metadata["error"] = span.status.message or attributes.get("error.type") or "error"
    return {
        "idempotency_key": span_idempotency_key(span),
        "messages": messages,
        "response": response,
        "model": str(
            attributes.get("gen_ai.response.model") or attributes.get("gen_ai.request.model") or ""
        ),
        "retrieved": retrieved,
        "latency_ms": (ended - started) // 1_000_000 if started and ended >= started else None,
        "prompt_tokens": _first_count(
            attributes, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"
        ),
        "completion_tokens": _first_count(
            attributes, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"
        ),
        "session_id": str(context.get("session.id") or context.get("gen_ai.conversation.id") or ""),
        "end_user_id": str(context.get("user.id") or context.get("enduser.id") or ""),
        "metadata": {"otel": otel_metadata},
        "created_at": (
            datetime.fromtimestamp(started / 1_000_000_000, tz=UTC) if started else None
        ),
    }


def _first_count(attributes: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = attributes.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _conversation(span: Span, attributes: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """The prompt messages and the answer, from the first form of the conventions that
    holds them."""
    sources = [attributes]
    for event in span.events:
        if event.name == "gen_ai.client.inference.operation.details":
            sources.append(attributes_to_dict(event.attributes))
    for source in sources:
        messages = _system_instructions(source) + _parts_messages(
            source.get("gen_ai.input.messages")
        )
        if messages:
            outputs = _parts_messages(source.get("gen_ai.output.messages"))
            return messages, _answer(outputs)
    messages, answer = _event_conversation(span)
    if messages:
        return messages, answer
    return _flattened_conversation(attributes)


def _decoded(value: Any) -> Any:
    """Structured attributes arrive as JSON strings (most SDKs) or as OTLP arrays and maps."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _parts_text(parts: Any) -> str:
    parts = _decoded(parts)
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        return ""
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping) and part.get("type", "text") == "text":
            text = part.get("content", part.get("text"))
            if isinstance(text, str):
                texts.append(text)
    return "".join(texts)


def _message_text(message: Mapping[str, Any]) -> str:
    if "parts" in message:
        return _parts_text(message["parts"])
    content = message.get("content")
    if isinstance(content, str):
        return content
    return _parts_text(content)


def _parts_messages(value: Any) -> list[dict[str, str]]:
    value = _decoded(value)
    if not isinstance(value, list):
        return []
    messages = []
    for message in value:
        if isinstance(message, Mapping) and message.get("role") in MESSAGE_ROLES:
            messages.append({"role": str(message["role"]), "content": _message_text(message)})
    return messages


def _system_instructions(attributes: dict[str, Any]) -> list[dict[str, str]]:
    text = _parts_text(attributes.get("gen_ai.system_instructions"))
    return [{"role": "system", "content": text}] if text else []


def _answer(outputs: list[dict[str, str]]) -> str:
    return next((message["content"] for message in outputs if message["role"] == "assistant"), "")


def _event_conversation(span: Span) -> tuple[list[dict[str, str]], str]:
    messages: list[dict[str, str]] = []
    answer = ""
    for event in span.events:
        event_attributes = attributes_to_dict(event.attributes)
        if event.name in MESSAGE_EVENT_ROLES:
            messages.append(
                {
                    "role": MESSAGE_EVENT_ROLES[event.name],
                    "content": _message_text(event_attributes),
                }
            )
        elif event.name == "gen_ai.choice" and not answer:
            message = _decoded(event_attributes.get("message"))
            if isinstance(message, Mapping):
                answer = _message_text(message)
            else:
                answer = _message_text(event_attributes)
        elif event.name == "gen_ai.content.prompt":
            messages.extend(_parts_messages(event_attributes.get("gen_ai.prompt")))
        elif event.name == "gen_ai.content.completion" and not answer:
            answer = _answer(_parts_messages(event_attributes.get("gen_ai.completion")))
    return messages, answer


def _flattened_conversation(attributes: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    def indexed(prefix: str) -> list[dict[str, str]]:
        messages = []
        index = 0
        while f"{prefix}.{index}.role" in attributes or f"{prefix}.{index}.content" in attributes:
            role = str(attributes.get(f"{prefix}.{index}.role") or "assistant")
            content = attributes.get(f"{prefix}.{index}.content")
            if role in MESSAGE_ROLES:
                messages.append({"role": role, "content": _parts_text(content)})
            index += 1
        return messages

    return indexed("gen_ai.prompt"), _answer(indexed("gen_ai.completion"))


def _retrieved_documents(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    """`gen_ai.retrieval.documents` ([{"id", "score", ...}]) as the interaction log's
    retrieved passages, ranked in their order."""
    documents = _decoded(attributes.get("gen_ai.retrieval.documents"))
    if not isinstance(documents, list):
        return []
    retrieved = []
    for rank, document in enumerate(
        (each for each in documents if isinstance(each, Mapping)), start=1
    ):
        text = document.get("content", document.get("text", ""))
        score = document.get("score")
        identifier = document.get("id")
        retrieved.append(
            {
                "text": _parts_text(text) if not isinstance(text, str) else text,
                "title": str(document.get("title") or ""),
                "source_uri": str(
                    document.get("source_uri") or document.get("uri") or document.get("url") or ""
                ),
                "document_id": str(identifier) if identifier is not None else None,
                "score": float(score)
                if isinstance(score, int | float) and not isinstance(score, bool)
                else None,
                "rank": rank,
            }
        )
    return retrieved
