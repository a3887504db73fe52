"""OTLP trace ingestion beside the native batch endpoint: the same interactions logged through
POST /api/v1/otel/v1/traces (as an OpenTelemetry-instrumented RAG app exports them) and through
POST /api/v1/interactions, in one run, over real HTTP.

Each interaction is, for OTLP, one trace of two GenAI spans, as the current conventions write
them: a retrieval span carrying the four passages (`gen_ai.retrieval.documents`) and a chat
span carrying the prompt, answer, model, tokens and session (`gen_ai.input.messages`,
`gen_ai.output.messages`, …). Exports hold 512 spans, the OTLP exporter's default batch;
native batches hold 1000 interactions, the endpoint's limit. Bodies are encoded beforehand so
that the client's own work stays out of the figures; the server's decoding, conversion,
validation and storing are in them.

Run from the repository root: .venv/bin/python bench/otlp_ingestion.py [--count 10000]
"""

import argparse
import gzip
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import bench_django_setup, machine_context, table, wsgi_server
from bench.ingestion import realistic_interaction, split_into_batches, stored_count, table_clear

NATIVE_BATCH_LIMIT = 1000
# BatchSpanProcessor's default max_export_batch_size.
OTLP_SPANS_PER_EXPORT = 512
SPANS_PER_INTERACTION = 2


def otlp_spans(item: dict, rng: random.Random) -> list:
    """The retrieval and chat spans an instrumented RAG app exports for `item`."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    def attributes(values: dict) -> list[KeyValue]:
        return [
            KeyValue(
                key=key,
                value=AnyValue(int_value=value)
                if isinstance(value, int)
                else AnyValue(string_value=value),
            )
            for key, value in values.items()
        ]

    trace_id = rng.randbytes(16)
    started = int(datetime.fromisoformat(item["created_at"]).timestamp() * 1e9)
    retrieval = Span(
        trace_id=trace_id,
        span_id=rng.randbytes(8),
        name="retrieval help-centre",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=started,
        end_time_unix_nano=started + 40_000_000,
        attributes=attributes(
            {
                "gen_ai.operation.name": "retrieval",
                "gen_ai.retrieval.documents": json.dumps(
                    [
                        {
                            "id": str(passage["document_id"]),
                            "score": passage["score"],
                            "content": passage["text"],
                            "title": passage["title"],
                            "source_uri": passage["source_uri"],
                        }
                        for passage in item["retrieved"]
                    ]
                ),
            }
        ),
    )
    system, user = item["messages"]
    chat = Span(
        trace_id=trace_id,
        span_id=rng.randbytes(8),
        name=f"chat {item['model']}",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=started + 40_000_000,
        end_time_unix_nano=started + 40_000_000 + item["latency_ms"] * 1_000_000,
        attributes=attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": item["model"],
                "gen_ai.response.model": item["model"],
                "gen_ai.usage.input_tokens": item["prompt_tokens"],
                "gen_ai.usage.output_tokens": item["completion_tokens"],
                "session.id": item["session_id"],
                "user.id": item["end_user_id"],
                "gen_ai.system_instructions": json.dumps(
                    [{"type": "text", "content": system["content"]}]
                ),
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": user["content"]}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": item["response"]}],
                            "finish_reason": "stop",
                        }
                    ]
                ),
            }
        ),
    )
    return [retrieval, chat]


def otlp_bodies(interactions: list[dict], rng: random.Random) -> list[bytes]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

    spans = [span for item in interactions for span in otlp_spans(item, rng)]
    bodies = []
    for batch in split_into_batches(spans, OTLP_SPANS_PER_EXPORT):
        export = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=Resource(
                        attributes=[
                            KeyValue(key="service.name", value=AnyValue(string_value="helpdesk"))
                        ]
                    ),
                    scope_spans=[ScopeSpans(spans=batch)],
                )
            ]
        )
        bodies.append(export.SerializeToString())
    return bodies


def post_all(
    *, url: str, raw_key: str, bodies: list[bytes], headers: dict, expected_status: int
) -> float:
    """POST the bodies one after the other; returns the elapsed seconds. An OTLP answer with a
    body is a partial success: some spans were rejected."""
    import requests

    with requests.Session() as session:
        session.headers.update({"Authorization": f"Bearer {raw_key}", **headers})
        started = time.perf_counter()
        for body in bodies:
            response = session.post(url, data=body)
            rejected = expected_status == 200 and response.content
            if response.status_code != expected_status or rejected:
                raise SystemExit(f"{url} answered {response.status_code}: {response.text[:500]}")
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="interactions per path")
    parser.add_argument("--rounds", type=int, default=3, help="runs per path; the median counts")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    bench_django_setup()
    print(machine_context())
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {args.count} interactions per path, "
        f"median of {args.rounds} rounds"
    )

    from flywheel.models import ApiKey, Project
    from flywheel.services import api_key_create

    project = Project.objects.create(slug="bench-otlp", name="Bench: OTLP ingestion")
    raw_key = api_key_create(project=project, kind=ApiKey.Kind.SECRET, name="bench").raw_key
    rng = random.Random(args.seed)
    interactions = [realistic_interaction(rng) for _ in range(args.count)]
    native_bodies = [
        json.dumps({"interactions": batch}).encode()
        for batch in split_into_batches(interactions, NATIVE_BATCH_LIMIT)
    ]
    protobuf_bodies = otlp_bodies(interactions, rng)
    gzip_bodies = [gzip.compress(body) for body in protobuf_bodies]
    paths = [
        (
            "POST /api/v1/interactions (JSON)",
            "/api/v1/interactions",
            native_bodies,
            {"Content-Type": "application/json"},
            201,
        ),
        (
            "OTLP protobuf",
            "/api/v1/otel/v1/traces",
            protobuf_bodies,
            {"Content-Type": "application/x-protobuf"},
            200,
        ),
        (
            "OTLP protobuf, gzip",
            "/api/v1/otel/v1/traces",
            gzip_bodies,
            {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
            200,
        ),
    ]

    timings: dict[str, list[float]] = {name: [] for name, *_ in paths}
    with wsgi_server() as base_url:
        # The first request of each path warms its imports and the database connection.
        for _name, path, bodies, headers, status in paths:
            post_all(
                url=base_url + path,
                raw_key=raw_key,
                bodies=bodies[:1],
                headers=headers,
                expected_status=status,
            )
        # The paths take turns, so that a change in the machine's load falls on all of them.
        for _round in range(args.rounds):
            for name, path, bodies, headers, status in paths:
                table_clear()
                timings[name].append(
                    post_all(
                        url=base_url + path,
                        raw_key=raw_key,
                        bodies=bodies,
                        headers=headers,
                        expected_status=status,
                    )
                )
                if stored_count(project.pk) != args.count:
                    raise SystemExit(f"{name} stored {stored_count(project.pk)} of {args.count}")
    rows = []
    for name, _path, bodies, _headers, _status in paths:
        seconds = statistics.median(timings[name])
        spans = f"{args.count * SPANS_PER_INTERACTION / seconds:,.0f}" if "OTLP" in name else "-"
        rows.append(
            [
                name,
                str(len(bodies)),
                f"{sum(map(len, bodies)) / args.count:,.0f}",
                f"{seconds:.2f}",
                f"{args.count / seconds:,.0f}",
                spans,
            ]
        )
    table_clear()
    print()
    print(
        table(
            ["path", "requests", "bytes/interaction", "median s", "interactions/s", "spans/s"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
