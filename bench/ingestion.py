"""Batch ingestion: interactions per second through the real HTTP API beside a raw COPY.

The API path is what an app that logs its own LLM's answers uses: POST /api/v1/interactions
with batches of up to 1000, over HTTP to a threaded WSGI server, authenticated with a secret
key, validated by pydantic straight from the JSON, and stored in one transaction per batch
(COPY into a staging table, then one INSERT … SELECT that keeps idempotency keys exact). The
COPY path writes the same rows, in the same batches, straight into the same table: the floor
the database sets, against which the API's overhead is read.

Run from the repository root: .venv/bin/python bench/ingestion.py [--count 20000] [--rounds 3]
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import bench_django_setup, machine_context, table, wsgi_server

API_BATCH_LIMIT = 1000
API_PATH = "POST /api/v1/interactions"
COPY_PATH = "psycopg COPY"
# A database of its own, so that this benchmark may run while another one does.
DATABASE_NAME = "flywheel_bench_ingestion"

SYSTEM_PROMPT = (
    "You are Acme's support assistant. Answer from the context passages; if they do not hold "
    "the answer, say so and offer to open a ticket."
)
QUESTIONS = [
    "How do I reset my password if I no longer have access to my email?",
    "Why was I charged twice for the {plan} plan this month?",
    "Can I export all my projects to CSV before cancelling?",
    "The mobile app stops syncing after {n} minutes in the background, is that expected?",
    "What is the upload limit for a single attachment on the {plan} plan?",
    "How long do you keep deleted items before they are gone for good?",
    "Does single sign-on work with our identity provider on the {plan} plan?",
    "I invited {n} colleagues but only some received the email. What should I check?",
    "Is there a way to schedule reports to go out every Monday morning?",
    "How do I move a workspace to another region?",
]
ANSWER_SENTENCES = [
    "You can do this from Settings, then Account, then Security.",
    "On the {plan} plan the limit is {n} MB per file.",
    "Deleted items stay in the bin for {n} days and are then erased.",
    "Duplicate charges are refunded automatically within {n} working days.",
    "Background sync on mobile pauses to save battery; open the app to resume it.",
    "Exports arrive as a ZIP archive with one CSV file per project.",
    "Invitations can land in spam folders, so ask your colleagues to check there first.",
    "An administrator can change this for the whole workspace.",
    "If the problem persists, reply here and I will open a ticket for you.",
]
PASSAGE_SENTENCES = [
    "Workspace administrators manage members, billing and security settings.",
    "Attachments larger than the plan limit are rejected with an explanatory message.",
    "Password resets are sent to the address on file and expire after one hour.",
    "Single sign-on supports SAML 2.0 and OpenID Connect identity providers.",
    "Invoices are issued on the first working day of each month.",
    "Mobile clients sync in the background while the operating system allows it.",
    "Scheduled reports can be sent daily, weekly or monthly to any workspace member.",
    "Data residency can be chosen per workspace among the EU, US and APAC regions.",
    "Deleted items are kept in the bin before being permanently erased.",
]
PLANS = ["Free", "Team", "Business", "Enterprise"]
MODELS = ["acme-support-8b", "acme-support-8b-lora-v3", "gpt-4o-mini"]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(plan=rng.choice(PLANS), n=rng.randint(2, 500))


def realistic_interaction(rng: random.Random) -> dict:
    """One interaction as a RAG app would log it: system prompt, question, answer, four
    retrieved passages with scores, usage, timings and a few metadata tags."""
    question = _fill(rng.choice(QUESTIONS), rng)
    answer = " ".join(_fill(s, rng) for s in rng.sample(ANSWER_SENTENCES, rng.randint(2, 4)))
    retrieved = [
        {
            "text": " ".join(rng.sample(PASSAGE_SENTENCES, 3)),
            "title": f"Help centre article {rng.randint(1, 400)}",
            "source_uri": f"https://help.acme.example/articles/{rng.randint(1000, 9999)}",
            "document_id": rng.randint(1, 5000),
            "chunk_id": rng.randint(1, 200_000),
            "score": round(rng.uniform(0.3, 0.9), 4),
            "rank": rank,
        }
        for rank in range(1, 5)
    ]
    prompt_tokens = rng.randint(350, 900)
    return {
        "idempotency_key": str(uuid.UUID(int=rng.getrandbits(128))),
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ],
        "response": answer,
        "model": rng.choice(MODELS),
        "retrieved": retrieved,
        "latency_ms": rng.randint(300, 4000),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": rng.randint(20, 180),
        "session_id": f"session-{rng.randint(1, 5000)}",
        "end_user_id": f"user-{rng.randint(1, 2000)}",
        "metadata": {
            "app": "helpdesk-bot",
            "channel": rng.choice(["web", "ios", "android", "slack"]),
            "locale": rng.choice(["en-GB", "en-US", "de-DE", "fr-FR"]),
            "experiment": rng.choice(["control", "reranker-b"]),
        },
        "created_at": datetime.now(UTC).isoformat(),
    }


def split_into_batches(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def table_clear() -> None:
    """Each path starts from the same empty table. CASCADE reaches only the tables that refer
    to interactions (ratings, reviews), empty in the bench database."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE flywheel_interaction CASCADE")


def stored_count(project_id: int) -> int:
    from flywheel.models import Interaction

    return Interaction.objects.filter(project_id=project_id).count()


def ingest_through_api(*, base_url: str, raw_key: str, bodies: list[bytes]) -> float:
    """POST the pre-encoded batches one after the other; returns the elapsed seconds. The JSON
    is encoded beforehand so that the client's own work stays out of the figure."""
    import requests

    headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"}
    with requests.Session() as session:
        started = time.perf_counter()
        for body in bodies:
            response = session.post(f"{base_url}/api/v1/interactions", data=body, headers=headers)
            if response.status_code != 201:
                raise SystemExit(f"API answered {response.status_code}: {response.text[:500]}")
        return time.perf_counter() - started


COPY_COLUMNS = [
    "id",
    "project_id",
    "source",
    "idempotency_key",
    "session_id",
    "end_user_id",
    "messages",
    "query_text",
    "retrieved",
    "response",
    "model_name",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "metadata",
    "created_at",
]


def columns_left_to_defaults() -> dict[str, object]:
    """The interaction table's other columns that have a value for a logged interaction (its
    model default: "" for the text columns, say), as the API's service fills them; the model
    version, index version and query embedding stay NULL."""
    from django.db import connection

    from flywheel.models import Interaction

    defaults = {}
    for field in Interaction._meta.concrete_fields:
        if field.generated or field.column in COPY_COLUMNS:
            continue
        default = field.get_db_prep_save(field.get_default(), connection)
        if default is not None:
            defaults[field.column] = default
    return defaults


def copy_row(item: dict, *, project_id: int, defaults: dict[str, object]) -> tuple:
    """The row the API's service would store for `item`, without its request hash."""
    query_text = next(m["content"] for m in reversed(item["messages"]) if m["role"] == "user")
    return (
        uuid.uuid4(),
        project_id,
        "log",
        item["idempotency_key"],
        item["session_id"],
        item["end_user_id"],
        json.dumps(item["messages"]),
        query_text,
        json.dumps(item["retrieved"]),
        item["response"],
        item["model"],
        item["latency_ms"],
        item["prompt_tokens"],
        item["completion_tokens"],
        json.dumps(item["metadata"]),
        item["created_at"],
        *defaults.values(),
    )


def ingest_with_copy(*, database_url: str, project_id: int, batches: list[list[dict]]) -> float:
    """COPY each batch in a transaction of its own, as the API commits each batch; the JSON
    encoding of the rows counts, as the API's parsing does."""
    import psycopg

    defaults = columns_left_to_defaults()
    columns = [*COPY_COLUMNS, *defaults]
    statement = f"COPY flywheel_interaction ({', '.join(columns)}) FROM STDIN"
    with psycopg.connect(database_url) as connection:
        started = time.perf_counter()
        for batch in batches:
            with (
                connection.transaction(),
                connection.cursor() as cursor,
                cursor.copy(statement) as copy,
            ):
                for item in batch:
                    copy.write_row(copy_row(item, project_id=project_id, defaults=defaults))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="interactions per path")
    parser.add_argument("--batch-size", type=int, default=API_BATCH_LIMIT, help="per request")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="turns each path takes")
    args = parser.parse_args()
    if not 1 <= args.batch_size <= API_BATCH_LIMIT:
        parser.error(f"--batch-size must be between 1 and {API_BATCH_LIMIT}")

    database_url = bench_django_setup(DATABASE_NAME)
    print(machine_context())
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · ingestion of {args.count} interactions")

    from flywheel.models import ApiKey, Project
    from flywheel.services import api_key_create

    project = Project.objects.create(slug="bench-ingestion", name="Bench: ingestion")
    raw_key = api_key_create(project=project, kind=ApiKey.Kind.SECRET, name="bench").raw_key
    rng = random.Random(args.seed)
    interactions = [realistic_interaction(rng) for _ in range(args.count)]
    batches = split_into_batches(interactions, args.batch_size)
    bodies = [json.dumps({"interactions": batch}).encode() for batch in batches]
    print(
        f"{len(batches)} batches of up to {args.batch_size}, "
        f"{sum(map(len, bodies)) / len(interactions):.0f} bytes of JSON per interaction"
    )

    # The paths take turns, each from an empty table, so that a change in the machine's load
    # weighs on both; the median round counts.
    seconds_by_path: dict[str, list[float]] = {API_PATH: [], COPY_PATH: []}
    with wsgi_server() as base_url:
        # The first request imports the URL configuration and opens the database connection.
        ingest_through_api(base_url=base_url, raw_key=raw_key, bodies=bodies[:1])
        for round_number in range(1, args.rounds + 1):
            table_clear()
            seconds_by_path[API_PATH].append(
                ingest_through_api(base_url=base_url, raw_key=raw_key, bodies=bodies)
            )
            if stored_count(project.pk) != args.count:
                raise SystemExit(f"the API stored {stored_count(project.pk)} of {args.count}")
            table_clear()
            seconds_by_path[COPY_PATH].append(
                ingest_with_copy(database_url=database_url, project_id=project.pk, batches=batches)
            )
            if stored_count(project.pk) != args.count:
                raise SystemExit(f"COPY stored {stored_count(project.pk)} of {args.count}")
            print(
                f"round {round_number}: API {seconds_by_path[API_PATH][-1]:.2f} s, "
                f"COPY {seconds_by_path[COPY_PATH][-1]:.2f} s"
            )

    api_seconds, copy_seconds = (statistics.median(seconds_by_path[p]) for p in seconds_by_path)
    api_rate, copy_rate = args.count / api_seconds, args.count / copy_seconds
    rows = [
        [
            name,
            f"{seconds:.2f}",
            f"{args.count / seconds:,.0f}",
            f"{seconds * 1000 / len(batches):.0f}",
        ]
        for name, seconds in [(API_PATH, api_seconds), (COPY_PATH, copy_seconds)]
    ]
    print()
    print(table(["path", "median s", "interactions/s", "ms per batch"], rows))
    print(
        f"\nAPI / COPY throughput: {api_rate / copy_rate:.2f} "
        f"(COPY is {copy_rate / api_rate:.1f}x); load average {os.getloadavg()[0]:.1f} at the end"
    )


if __name__ == "__main__":
    main()
