"""OTLP/HTTP trace ingestion (POST /api/v1/otel/v1/traces): an app instrumented with
OpenTelemetry exports its GenAI spans and each model call becomes a logged interaction.

The end-to-end tests run the real OpenTelemetry SDK, its OTLP/HTTP exporter and the OpenAI
instrumentation against the live server, with Flywheel's own chat endpoint as the model; the
exporter's force_flush returns once the export was answered. The others post bodies the SDK's
own encoder wrote (or OTLP JSON as the specification spells it) through the test client.
"""

import gzip
import json
from collections.abc import Callable, Iterator

import openai
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Tracer, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from flywheel.models import ApiKey, Interaction
from flywheel.services import api_key_create
from tests.conftest import bearer
from tests.factories import ProjectFactory

TRACES_PATH = "/api/v1/otel/v1/traces"
PROTOBUF = "application/x-protobuf"
QUESTION = "How long do deleted notes stay in the bin?"
STARTED_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
CHAT_DURATION_NS = 1_234_000_000


def _otel_key(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"otel:{context.trace_id:032x}:{context.span_id:016x}"


def _chat_span(
    tracer: Tracer,
    *,
    question: str = QUESTION,
    answer: str = "Thirty days.",
    attributes: dict | None = None,
) -> None:
    """A chat span as the current GenAI conventions (and openai-v2 with content capture
    `span_only`) write it, with a fixed start and end."""
    span = tracer.start_span(
        "chat gpt-4o-mini",
        kind=SpanKind.CLIENT,
        start_time=STARTED_NS,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 21,
            "gen_ai.usage.output_tokens": 4,
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": question}]}]
            ),
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": answer}],
                        "finish_reason": "stop",
                    }
                ]
            ),
            **(attributes or {}),
        },
    )
    span.end(end_time=STARTED_NS + CHAT_DURATION_NS)


def _sdk_spans(write: Callable[[Tracer], None], *, resource: dict | None = None):
    """The spans `write` makes with the real SDK."""
    recorded = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource or {"service.name": "notes-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    write(provider.get_tracer("notes-bot"))
    provider.shutdown()
    return recorded.get_finished_spans()


def _protobuf_body(spans) -> bytes:
    return encode_spans(spans).SerializeToString()


def _post(client, key: str, body: bytes | str, *, content_type: str = PROTOBUF, **headers):
    return client.post(TRACES_PATH, data=body, content_type=content_type, **bearer(key), **headers)


def _partial_success(response) -> tuple[int, str]:
    message = ExportTraceServiceResponse()
    message.ParseFromString(response.content)
    return message.partial_success.rejected_spans, message.partial_success.error_message


# ---------------------------------------------------------------------------------------------
# End to end: the real exporter and instrumentation against the live server


@pytest.fixture
def live_project(transactional_db, one_torch_thread):
    return ProjectFactory()


@pytest.fixture
def app_key(live_project) -> str:
    """A secret key with the default scopes (chat, log, read, rate), as an app holds."""
    return api_key_create(project=live_project, kind="secret", name="app").raw_key


@pytest.fixture
def otlp_exporter(live_server, app_key) -> Callable[..., OTLPSpanExporter]:
    def make(**options) -> OTLPSpanExporter:
        return OTLPSpanExporter(
            endpoint=f"{live_server.url}{TRACES_PATH}",
            headers={"Authorization": f"Bearer {app_key}"},
            **options,
        )

    return make


@pytest.fixture
def instrumented_tracing(
    monkeypatch, otlp_exporter
) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """The OpenAI client instrumented by opentelemetry-instrumentation-openai-v2 with content
    capture on the span, exporting through a batching OTLP/HTTP exporter (as an app would) and
    recording the same spans in memory (for their ids)."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    provider = TracerProvider(resource=Resource.create({"service.name": "notes-bot"}))
    provider.add_span_processor(BatchSpanProcessor(otlp_exporter()))
    recorded = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    yield provider, recorded
    instrumentor.uninstrument()
    provider.shutdown()


def test_an_instrumented_openai_call_to_flywheel_is_logged_as_one_more_interaction(
    live_server, live_project, app_key, instrumented_tracing
):
    provider, recorded = instrumented_tracing
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=app_key, max_retries=0)
    messages = [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": QUESTION},
    ]
    with provider.get_tracer("notes-bot").start_as_current_span("handle ticket"):
        reply = client.chat.completions.create(
            model="flywheel",
            messages=messages,  # type: ignore[arg-type]
            max_tokens=4,
            extra_body={"flywheel": {"rag": False}},
        )
    assert provider.force_flush()

    served = Interaction.objects.get(project=live_project, source=Interaction.Source.CHAT)
    logged = Interaction.objects.get(project=live_project, source=Interaction.Source.LOG)
    assert str(served.id) == reply.model_extra["flywheel"]["interaction_id"]  # type: ignore[index]
    assert logged.id != served.id
    (chat_span,) = [span for span in recorded.get_finished_spans() if span.name != "handle ticket"]
    assert logged.idempotency_key == _otel_key(chat_span)
    assert logged.messages == messages
    assert logged.query_text == QUESTION
    assert logged.response == reply.choices[0].message.content
    assert logged.model_name == reply.model
    assert reply.usage is not None
    assert (logged.prompt_tokens, logged.completion_tokens) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )
    assert chat_span.start_time is not None and chat_span.end_time is not None
    assert logged.latency_ms == (chat_span.end_time - chat_span.start_time) // 1_000_000
    assert logged.metadata["otel"]["service_name"] == "notes-bot"
    assert logged.metadata["otel"]["provider"] == "openai"
    assert Interaction.objects.filter(project=live_project).count() == 2, (
        "the app's own span is not GenAI and logs nothing"
    )


def test_a_gzip_export_is_stored_and_the_same_spans_exported_again_are_stored_once(
    live_project, otlp_exporter
):
    spans = _sdk_spans(lambda tracer: _chat_span(tracer, attributes={"session.id": "ticket-42"}))
    exporter = otlp_exporter(compression=Compression.Gzip)

    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()

    logged = Interaction.objects.get(project=live_project)
    assert logged.idempotency_key == _otel_key(spans[0])
    assert logged.session_id == "ticket-42"
    assert logged.response == "Thirty days."


# ---------------------------------------------------------------------------------------------
# Encodings and conventions, through the test client


@pytest.mark.django_db
def test_a_chat_span_becomes_an_interaction_with_every_field(client, project, secret_key):
    spans = _sdk_spans(
        lambda tracer: _chat_span(
            tracer, attributes={"gen_ai.conversation.id": "conv-7", "user.id": "reader-3"}
        )
    )

    response = _post(client, secret_key, _protobuf_body(spans))

    assert response.status_code == 200
    assert response["Content-Type"] == PROTOBUF
    assert _partial_success(response) == (0, "")
    assert response["X-Flywheel-Interactions-Created"] == "1"
    logged = Interaction.objects.get(project=project)
    assert logged.source == Interaction.Source.LOG
    assert logged.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION},
    ]
    assert logged.response == "Thirty days."
    assert logged.model_name == "gpt-4o-mini-2024-07-18"
    assert (logged.prompt_tokens, logged.completion_tokens) == (21, 4)
    assert logged.latency_ms == CHAT_DURATION_NS // 1_000_000
    assert logged.created_at.timestamp() == STARTED_NS / 1_000_000_000
    assert (logged.session_id, logged.end_user_id) == ("conv-7", "reader-3")


@pytest.mark.django_db
def test_an_otlp_json_export_with_the_earlier_event_conventions_is_logged(
    client, project, secret_key
):
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    export = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "docs-bot"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "my-instrumentation"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "chat llama3",
                                "kind": 3,
                                "startTimeUnixNano": str(STARTED_NS),
                                "endTimeUnixNano": str(STARTED_NS + 250_000_000),
                                "attributes": [
                                    {"key": "gen_ai.system", "value": {"stringValue": "ollama"}},
                                    {
                                        "key": "gen_ai.request.model",
                                        "value": {"stringValue": "llama3"},
                                    },
                                    {
                                        "key": "gen_ai.usage.prompt_tokens",
                                        "value": {"intValue": "12"},
                                    },
                                    {
                                        "key": "gen_ai.usage.completion_tokens",
                                        "value": {"intValue": 3},
                                    },
                                    {"key": "session.id", "value": {"stringValue": "s-1"}},
                                ],
                                "events": [
                                    {
                                        "name": "gen_ai.system.message",
                                        "timeUnixNano": str(STARTED_NS),
                                        "attributes": [
                                            {"key": "content", "value": {"stringValue": "Be kind."}}
                                        ],
                                    },
                                    {
                                        "name": "gen_ai.user.message",
                                        "timeUnixNano": str(STARTED_NS),
                                        "attributes": [
                                            {"key": "content", "value": {"stringValue": QUESTION}}
                                        ],
                                    },
                                    {
                                        "name": "gen_ai.choice",
                                        "timeUnixNano": str(STARTED_NS + 250_000_000),
                                        "attributes": [
                                            {"key": "index", "value": {"intValue": "0"}},
                                            {
                                                "key": "message",
                                                "value": {
                                                    "kvlistValue": {
                                                        "values": [
                                                            {
                                                                "key": "role",
                                                                "value": {
                                                                    "stringValue": "assistant"
                                                                },
                                                            },
                                                            {
                                                                "key": "content",
                                                                "value": {
                                                                    "stringValue": "Thirty days."
                                                                },
                                                            },
                                                        ]
                                                    }
                                                },
                                            },
                                        ],
                                    },
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }

    response = _post(client, secret_key, json.dumps(export), content_type="application/json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {}
    logged = Interaction.objects.get(project=project)
    assert logged.idempotency_key == f"otel:{trace_id}:{span_id}"
    assert logged.messages == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": QUESTION},
    ]
    assert logged.response == "Thirty days."
    assert (logged.model_name, logged.prompt_tokens, logged.completion_tokens) == ("llama3", 12, 3)
    assert (logged.latency_ms, logged.session_id) == (250, "s-1")
    assert logged.metadata["otel"]["system"] == "ollama"
    assert logged.metadata["otel"]["service_name"] == "docs-bot"


@pytest.mark.django_db
def test_other_spans_are_ignored_and_counted_and_retrieval_lends_its_documents(
    client, project, secret_key
):
    documents = [
        {"id": "bin.md#1", "score": 0.91, "content": "Deleted notes stay 30 days."},
        {"id": "plans.md#3", "score": 0.42, "content": "The team plan costs 8 euros."},
    ]

    def write(tracer: Tracer) -> None:
        with tracer.start_as_current_span("GET /ask"), tracer.start_as_current_span("SELECT"):
            pass
        with tracer.start_as_current_span("answer"):
            retrieval = tracer.start_span(
                "retrieval notes",
                attributes={
                    "gen_ai.operation.name": "retrieval",
                    "gen_ai.retrieval.documents": json.dumps(documents),
                },
            )
            retrieval.end()
            _chat_span(tracer)

    response = _post(client, secret_key, _protobuf_body(_sdk_spans(write)))

    assert response.status_code == 200
    assert _partial_success(response) == (0, "")
    assert response["X-Flywheel-Spans-Ignored"] == "3"
    logged = Interaction.objects.get(project=project)
    assert [(item["document_id"], item["rank"], item["score"]) for item in logged.retrieved] == [
        ("bin.md#1", 1, 0.91),
        ("plans.md#3", 2, 0.42),
    ]
    assert logged.retrieved[0]["text"] == "Deleted notes stay 30 days."


@pytest.mark.django_db
def test_spans_that_cannot_be_logged_are_rejected_by_count_and_reason_and_the_rest_stored(
    client, project, secret_key
):
    def write(tracer: Tracer) -> None:
        _chat_span(tracer)
        # Content capture off: the span has the model and tokens but no messages.
        tracer.start_span("chat no-content", attributes={"gen_ai.operation.name": "chat"}).end()
        _chat_span(tracer, question="Where is the bin?\x00")

    response = _post(client, secret_key, _protobuf_body(_sdk_spans(write)))

    assert response.status_code == 200
    rejected, message = _partial_success(response)
    assert rejected == 2
    assert "no user message" in message and "CAPTURE_MESSAGE_CONTENT" in message
    assert "NUL" in message
    assert Interaction.objects.get(project=project).query_text == QUESTION


@pytest.mark.django_db
def test_a_span_sent_again_with_other_content_is_rejected_not_overwritten(
    client, project, secret_key
):
    spans = _sdk_spans(_chat_span)
    first = _post(client, secret_key, _protobuf_body(spans))
    resent = encode_spans(spans)
    for attribute in resent.resource_spans[0].scope_spans[0].spans[0].attributes:
        if attribute.key == "gen_ai.output.messages":
            attribute.value.string_value = json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "Forever."}]}]
            )

    second = _post(client, secret_key, resent.SerializeToString())

    assert first.status_code == second.status_code == 200
    rejected, message = _partial_success(second)
    assert rejected == 1 and "already logged with other content" in message
    assert Interaction.objects.get(project=project).response == "Thirty days."


@pytest.mark.django_db
def test_a_gzip_body_is_read(client, project, secret_key):
    body = gzip.compress(_protobuf_body(_sdk_spans(_chat_span)))

    response = _post(client, secret_key, body, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 200
    assert Interaction.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_a_gzip_body_that_inflates_beyond_the_request_limit_is_refused(
    client, project, secret_key, settings
):
    body = _protobuf_body(_sdk_spans(_chat_span))
    settings.FLYWHEEL_MAX_REQUEST_BYTES = len(body) - 1

    response = _post(client, secret_key, gzip.compress(body), HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert not Interaction.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, content_type, headers, status, code",
    [
        (b"\xff\xfe not protobuf", PROTOBUF, {}, 400, "invalid_otlp"),
        (b"{not json", "application/json", {}, 400, "invalid_json"),
        (b"[]", "application/json", {}, 400, "invalid_otlp"),
        (
            json.dumps({"resourceSpans": [{"schemaUrl": "nul\u0000"}]}),
            "application/json",
            {},
            400,
            "invalid_value",
        ),
        (
            json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}),
            "application/json",
            {},
            400,
            "invalid_otlp",
        ),
        (
            json.dumps({"resourceSpans": [{"scopeSpans": "not a list"}]}),
            "application/json",
            {},
            400,
            "invalid_otlp",
        ),
        (b"not gzip", PROTOBUF, {"HTTP_CONTENT_ENCODING": "gzip"}, 400, "invalid_gzip"),
        (b"x", PROTOBUF, {"HTTP_CONTENT_ENCODING": "br"}, 415, "unsupported_content_encoding"),
        (b"<spans/>", "application/xml", {}, 415, "unsupported_media_type"),
    ],
)
def test_a_bad_body_is_a_clear_error_and_stores_nothing(
    client, secret_key, body, content_type, headers, status, code
):
    response = _post(client, secret_key, body, content_type=content_type, **headers)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert not Interaction.objects.exists()


@pytest.mark.django_db
def test_a_key_without_the_log_scope_is_refused(client, project):
    reader = api_key_create(
        project=project, kind="secret", name="reader", scopes=[ApiKey.Scope.READ]
    ).raw_key

    response = _post(client, reader, _protobuf_body(_sdk_spans(_chat_span)))

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "missing_scope" and "'log'" in error["message"]
    assert not Interaction.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "attributes, start_ns",
    [
        ({"gen_ai.usage.input_tokens": 2**40}, STARTED_NS),
        ({}, 1_000_000_000),  # 1970: before any interaction can have been logged
    ],
    ids=["int4-overflow", "date-1970"],
)
def test_a_span_with_values_no_column_can_hold_is_rejected_not_a_server_error(
    client, project, secret_key, attributes, start_ns
):
    response = _post(
        client, secret_key, _protobuf_body(_sdk_spans(_bare_chat_span(attributes, start_ns)))
    )

    assert response.status_code == 200, response.content
    assert _partial_success(response)[0] == 1
    assert not Interaction.objects.filter(project=project).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("count", [float("nan"), float("inf"), 21.5])
def test_a_token_count_that_is_not_a_whole_number_is_left_out(client, project, secret_key, count):
    response = _post(
        client,
        secret_key,
        _protobuf_body(
            _sdk_spans(_bare_chat_span({"gen_ai.usage.input_tokens": count}, STARTED_NS))
        ),
    )

    assert response.status_code == 200, response.content
    assert _partial_success(response)[0] == 0
    assert Interaction.objects.get(project=project).prompt_tokens is None


def _bare_chat_span(attributes: dict, start_ns: int) -> Callable[[Tracer], None]:
    def write(tracer: Tracer) -> None:
        span = tracer.start_span(
            "chat",
            kind=SpanKind.CLIENT,
            start_time=start_ns,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "Yes."}]}]
                ),
                **attributes,
            },
        )
        span.end(end_time=start_ns + CHAT_DURATION_NS)

    return write
