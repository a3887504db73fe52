"""The dashboards at scale: N synthetic interactions, with ratings and reviews, loaded by COPY
into a database of their own, then the overview (7, 30 and 90 days) and the interactions
list (each filter, first and second page) timed through Django's request handling, 20 runs
each, p50/p95. Also: the rollups' full rebuild, an incremental refresh after new ratings on
old interactions, the overview's figures checked against a direct count over the
interactions (what the page aggregated before rollups, timed once), and the plan shape of
each list page's main query.

Rows are kept small (a short question and answer, no embedding, no messages) so that 5M fit
in a few GB. Indexes are dropped during the load and built again after it, as a bulk load
does; the rollups are then built by the same rebuild as `manage.py rebuild_rollups`.

Run from the repository root:
    nice .venv/bin/python bench/scale.py --count 1000000 > /tmp/scale-1m.txt 2>&1 &
`--reuse` times a database an earlier run loaded, without loading it again.
"""

import argparse
import io
import json
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import (
    bench_django_join,
    bench_django_setup,
    machine_context,
    percentiles,
    table,
)

DATABASE_NAME = "flywheel_bench_scale"
PROJECT_SLUG = "scale"
# Interactions spread evenly over this many days before the run, so that the 90-day overview
# is full.
SPAN_DAYS = 120
COPY_BATCH = 200_000
LATE_RATINGS = 200
RATED_SHARE = 0.30
SECOND_RATER_SHARE = 0.10
UP_SHARE = 0.70
SCORED_SHARE = 0.50
CORRECTION_SHARE_OF_DOWN = 0.10
REVIEWED_SHARE = 0.03
MODEL_NAMES = ["base", "lora-v2", "lora-v3"]
APP_MODEL_NAME = "gpt-app"
QUESTIONS = [
    "How do I reset my password?",
    "Why was I charged twice this month?",
    "Can I export my projects to CSV?",
    "What is the upload limit on the Team plan?",
    "How long are deleted items kept?",
    "Does single sign-on work with Okta?",
]
ANSWERS = [
    "Open Settings, then Security, and choose Reset.",
    "Duplicate charges are refunded within five days.",
    "Yes: Projects, then Export, gives one CSV per project.",
    "The limit is 250 MB per file on the Team plan.",
    "Deleted items stay in the bin for thirty days.",
]


NULL = r"\N"


def progress(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _copy_text(value) -> str:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (dict, list)):
        value = json.dumps(value)
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def copy_columns(model, given: list[str]) -> tuple[list[str], str]:
    """The table's insertable columns: those this benchmark fills, then every other one with
    its model default (columns added by later migrations included), as a constant COPY
    suffix."""
    from django.db.models import NOT_PROVIDED

    others = []
    for field in model._meta.concrete_fields:
        if field.column in given or getattr(field, "generated", False) or field.primary_key:
            continue
        if field.db_default is not NOT_PROVIDED:
            continue
        others.append((field.column, field.get_default()))
    suffix = "".join("\t" + _copy_text(default) for _, default in others)
    return given + [column for column, _ in others], suffix


def copy_rows(cursor, table_name: str, columns: list[str], lines: list[str]) -> None:
    with cursor.copy(f"COPY {table_name} ({', '.join(columns)}) FROM STDIN") as copy:
        buffer = io.StringIO()
        for line in lines:
            buffer.write(line)
        copy.write(buffer.getvalue())


def secondary_indexes(cursor, table_name: str) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the table's indexes that no constraint owns."""
    cursor.execute(
        """
        SELECT i.relname, pg_get_indexdef(x.indexrelid)
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        WHERE x.indrelid = %s::regclass
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
        """,
        [table_name],
    )
    return cursor.fetchall()


def load(*, database_url: str, count: int, seed: int) -> dict:
    """Create the project, its versions and a reviewer, then COPY the interactions, ratings
    and reviews. Returns what the timing needs."""
    import psycopg
    from django.contrib.auth import get_user_model

    from feedback.models import Rating, Review
    from flywheel.models import IndexVersion, Interaction, ModelVersion, Project

    project = Project.objects.create(name="Scale", slug=PROJECT_SLUG)
    models = [
        ModelVersion.objects.create(project=project, name=name, base_model="bench")
        for name in MODEL_NAMES
    ]
    indexes = [
        IndexVersion.objects.create(project=project, number=number, embedding_model="bench")
        for number in (1, 2, 3)
    ]
    user_model = get_user_model()
    reviewer = user_model.objects.create_superuser("bench-admin", password="bench")
    rng = random.Random(seed)
    now = datetime.now(UTC)
    span_seconds = SPAN_DAYS * 86_400

    interaction_columns, interaction_defaults = copy_columns(
        Interaction,
        [
            "id",
            "project_id",
            "source",
            "query_text",
            "response",
            "model_version_id",
            "model_name",
            "index_version_id",
            "latency_ms",
            "created_at",
        ],
    )
    rating_columns, rating_defaults = copy_columns(
        Rating,
        [
            "interaction_id",
            "rater_id",
            "thumb",
            "score",
            "correction",
            "source",
            "created_at",
            "updated_at",
        ],
    )
    review_columns, review_defaults = copy_columns(
        Review,
        [
            "interaction_id",
            "reviewer_id",
            "decision",
            "ideal_answer",
            "created_at",
            "updated_at",
        ],
    )
    tables = ["flywheel_interaction", "feedback_rating", "feedback_review"]
    counts = {"interactions": 0, "ratings": 0, "reviews": 0}
    started = time.perf_counter()
    with psycopg.connect(database_url) as connection, connection.cursor() as cursor:
        dropped = [index for name in tables for index in secondary_indexes(cursor, name)]
        for name, _ in dropped:
            cursor.execute(f'DROP INDEX "{name}"')
        # Foreign-key checks and the rollup marks, row by row or statement by statement, are
        # what a bulk load skips; the rollups are rebuilt afterwards.
        cursor.execute("SET session_replication_role = replica")
        connection.commit()
        for batch_start in range(0, count, COPY_BATCH):
            size = min(COPY_BATCH, count - batch_start)
            interactions, ratings, reviews = [], [], []
            for position in range(batch_start, batch_start + size):
                interaction_id = uuid.uuid4()
                # In the order they were logged, as a live system stores them.
                created = now - timedelta(
                    seconds=span_seconds * (1 - (position + rng.random()) / count)
                )
                # Newer model and index versions took over as time went by.
                age = (now - created).total_seconds() / span_seconds
                model_index = min(2, int((1 - age) * 3 + rng.random() * 0.5))
                # Apps that log their own LLM name it, and retrieve without Flywheel's index.
                app_logged = rng.random() < 0.2
                versions = (
                    (NULL, APP_MODEL_NAME, NULL)
                    if app_logged
                    else (models[model_index].pk, "", indexes[model_index].pk)
                )
                interactions.append(
                    f"{interaction_id}\t{project.pk}\tlog\t{rng.choice(QUESTIONS)}\t"
                    f"{rng.choice(ANSWERS)}\t{versions[0]}\t{versions[1]}\t{versions[2]}\t"
                    f"{rng.randint(200, 4000)}\t{created.isoformat()}{interaction_defaults}\n"
                )
                if rng.random() < RATED_SHARE:
                    raters = 2 if rng.random() < SECOND_RATER_SHARE else 1
                    for rater in range(raters):
                        up = rng.random() < UP_SHARE
                        score = (
                            (rng.randint(4, 5) if up else rng.randint(1, 2))
                            if rng.random() < SCORED_SHARE
                            else None
                        )
                        correction = (
                            "A better answer."
                            if not up and rng.random() < CORRECTION_SHARE_OF_DOWN
                            else ""
                        )
                        rated = created + timedelta(minutes=rng.randint(1, 600))
                        ratings.append(
                            f"{interaction_id}\tuser-{rater}\t{'up' if up else 'down'}\t"
                            f"{_copy_text(score)}\t{correction}\tapi\t{rated.isoformat()}\t"
                            f"{rated.isoformat()}{rating_defaults}\n"
                        )
                if rng.random() < REVIEWED_SHARE:
                    decision = rng.choices(
                        ["approved", "rejected", "corrected"], weights=[5, 2, 3]
                    )[0]
                    ideal = "The ideal answer." if decision == "corrected" else ""
                    reviewed = created + timedelta(hours=rng.randint(1, 48))
                    reviews.append(
                        f"{interaction_id}\t{reviewer.pk}\t{decision}\t{ideal}\t"
                        f"{reviewed.isoformat()}\t{reviewed.isoformat()}{review_defaults}\n"
                    )
            copy_rows(cursor, "flywheel_interaction", interaction_columns, interactions)
            copy_rows(cursor, "feedback_rating", rating_columns, ratings)
            copy_rows(cursor, "feedback_review", review_columns, reviews)
            connection.commit()
            counts["interactions"] += size
            counts["ratings"] += len(ratings)
            counts["reviews"] += len(reviews)
            progress(f"loaded {counts['interactions']:,} interactions")
        cursor.execute("SET session_replication_role = DEFAULT")
        loaded = time.perf_counter() - started
        for name, definition in dropped:
            progress(f"building {name}")
            cursor.execute(definition)
            connection.commit()
        indexed = time.perf_counter() - started - loaded
    connection = psycopg.connect(database_url, autocommit=True)
    with connection:
        progress("VACUUM ANALYZE")
        for name in tables:
            connection.execute(f"VACUUM ANALYZE {name}")
    return {
        **counts,
        "load_s": loaded,
        "index_s": indexed,
        "vacuum_s": time.perf_counter() - started - loaded - indexed,
    }


def trigger_cost(*, database_url: str, project_id: int, rounds: int = 7) -> list[float]:
    """Seconds to COPY 20 batches of 1,000 interactions, each batch committed on its own as the
    API commits a batch, with the rollup-marking insert trigger over without it, alternated:
    one ratio per round (a busy machine moves single figures more than the trigger does)."""
    import psycopg

    from flywheel.models import Interaction

    columns, defaults = copy_columns(
        Interaction,
        ["id", "project_id", "source", "query_text", "response", "model_name", "created_at"],
    )
    rng = random.Random(1)

    def batch() -> list[str]:
        now = datetime.now(UTC)
        return [
            f"{uuid.uuid4()}\t{project_id}\tlog\t{rng.choice(QUESTIONS)}\t"
            f"{rng.choice(ANSWERS)}\t{APP_MODEL_NAME}\t"
            f"{(now - timedelta(seconds=rng.random() * 86_400)).isoformat()}{defaults}\n"
            for _ in range(1000)
        ]

    ratios = []
    with psycopg.connect(database_url) as connection, connection.cursor() as cursor:
        for round_number in range(rounds):
            seconds = {}
            # Which goes first alternates, so that neither always meets a warmer cache.
            order = (True, False) if round_number % 2 == 0 else (False, True)
            for marked in order:
                action = "ENABLE" if marked else "DISABLE"
                cursor.execute(
                    f"ALTER TABLE flywheel_interaction {action} TRIGGER rollup_mark_insert"
                )
                connection.commit()
                batches = [batch() for _ in range(20)]
                started = time.perf_counter()
                for lines in batches:
                    copy_rows(cursor, "flywheel_interaction", columns, lines)
                    connection.commit()
                seconds[marked] = time.perf_counter() - started
            ratios.append(seconds[True] / seconds[False])
        cursor.execute("ALTER TABLE flywheel_interaction ENABLE TRIGGER rollup_mark_insert")
    return ratios


def timed_runs(work: Callable[[], object], runs: int) -> tuple[float, float]:
    work()  # the first request warms caches: reported figures are steady-state
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        durations.append((time.perf_counter() - started) * 1000)
    return percentiles(durations)


class QueryRecorder:
    """The SQL a request runs, with its parameters and time, to EXPLAIN the slowest."""

    def __init__(self):
        self.queries: list[tuple[float, str, object]] = []

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.queries.append((time.perf_counter() - started, sql, params))


def plan_shape(sql: str, params) -> str:
    """The plan's nodes, outermost first, with the index each scan used and the rows it
    produced: e.g. Limit > Nested Loop > Index Scan Backward using interaction_project_time
    (rows 51 x 1 loops)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN (ANALYZE, BUFFERS OFF, COSTS OFF, TIMING OFF, SUMMARY OFF) " + sql, params
        )
        lines = [row[0] for row in cursor.fetchall()]
    nodes = []
    for line in lines:
        stripped = line.strip().removeprefix("-> ").strip()
        if not stripped or stripped.startswith(
            (
                "Filter",
                "Index Cond",
                "Rows Removed",
                "Sort ",
                "Hash Cond",
                "Join Filter",
                "Recheck",
                "Heap Blocks",
                "Group Key",
                "Worker",
                "Buckets",
                "Order By",
                "Presorted",
                "Full-sort",
                "Pre-sorted",
                "Heap Fetches",
                "Cache",
                "Hits",
                "Output",
                "Storage",
                "Window",
                "One-Time",
                "InitPlan",
                "SubPlan",
                "Planning",
                "Execution",
                "Disabled",
                "Index Searches",
            )
        ):
            continue
        node = re.sub(
            r"\s*\(actual rows=([\d.]+) loops=(\d+)\)", r" (rows \1 x \2 loops)", stripped
        )
        node = re.sub(r" on flywheel_\w+| on feedback_\w+", "", node)
        nodes.append(node)
    return " > ".join(nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--reuse", action="store_true", help="time an already loaded database")
    arguments = parser.parse_args()

    if arguments.reuse:
        bench_django_join(DATABASE_NAME)
        from django.core.management import call_command

        # Indexes and other schema changes made since the load.
        call_command("migrate", verbosity=0, interactive=False)
        loaded = None
    else:
        database_url = bench_django_setup(DATABASE_NAME)
        print(machine_context())
        progress(f"loading {arguments.count:,} interactions")
        loaded = load(database_url=database_url, count=arguments.count, seed=arguments.seed)

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.urls import reverse
    from django.utils import timezone

    from dashboard.selectors.interactions import InteractionFilters, interactions_page
    from dashboard.selectors.overview import overview_get
    from feedback.models import DailyRollup, Rating
    from feedback.services.ratings import rating_submit
    from feedback.services.rollups import rollups_rebuild, rollups_refresh
    from flywheel.models import IndexVersion, Interaction, ModelVersion, Project

    if arguments.reuse:
        print(machine_context())
    project = Project.objects.get(slug=PROJECT_SLUG)
    counts = {
        "interactions": Interaction.objects.filter(project=project).count(),
        "ratings": Rating.objects.filter(interaction__project=project).count(),
    }
    print(
        f"\n{counts['interactions']:,} interactions, {counts['ratings']:,} ratings over "
        f"{SPAN_DAYS} days; {arguments.runs} runs per figure (after one warm-up)."
    )
    if loaded:
        print(
            f"Load: COPY {loaded['load_s']:.0f} s, indexes {loaded['index_s']:.0f} s, "
            f"VACUUM ANALYZE {loaded['vacuum_s']:.0f} s."
        )
        progress("rebuilding the rollups")
        started = time.perf_counter()
        rebuilt = rollups_rebuild(days_per_batch=7)
        print(
            f"rebuild_rollups: {time.perf_counter() - started:.1f} s for "
            f"{rebuilt.buckets} project-days, "
            f"{DailyRollup.objects.filter(project=project).count()} rollup rows."
        )

    # New ratings today on random older interactions: the refresh must recompute their days
    # (up to all 120) from the source rows.
    progress("incremental refresh")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM flywheel_interaction WHERE project_id = %s "
            "AND created_at < now() - interval '7 days' ORDER BY random() LIMIT %s",
            [project.pk, LATE_RATINGS],
        )
        old_ids = [row[0] for row in cursor.fetchall()]
    for interaction in Interaction.objects.filter(pk__in=old_ids):
        rating_submit(interaction=interaction, rater_id="bench-late", source="api", thumb="up")
    started = time.perf_counter()
    refreshed = rollups_refresh(wait=True)
    print(
        f"Incremental refresh after {len(old_ids)} ratings on old interactions: "
        f"{time.perf_counter() - started:.1f} s for {refreshed.buckets} project-days."
    )

    client = Client(HTTP_HOST="localhost")
    client.force_login(get_user_model().objects.get(username="bench-admin"))
    today = timezone.localdate()
    rows = []

    progress("timing the overview")
    overview_url = reverse("dashboard:overview", args=[PROJECT_SLUG])
    for days in (7, 30, 90):
        query = {"from": (today - timedelta(days=days - 1)).isoformat(), "to": today.isoformat()}

        def get_overview(query=query):
            response = client.get(overview_url, query)
            assert response.status_code == 200, response.status_code

        p50, p95 = timed_runs(get_overview, arguments.runs)
        rows.append((f"overview, {days} days", f"{p50:.1f}", f"{p95:.1f}"))

    # The rollups' totals beside a direct count over the interactions, the way the overview
    # used to aggregate, once.
    progress("direct count for 30 days")
    date_from = today - timedelta(days=29)
    overview = overview_get(project=project, date_from=date_from, date_to=today)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH scope AS (
                SELECT id FROM flywheel_interaction
                WHERE project_id = %s AND created_at >= %s AND created_at < %s
            )
            SELECT (SELECT count(*) FROM scope),
                   count(*) FILTER (WHERE r.thumb = 'up'),
                   count(*) FILTER (WHERE r.thumb = 'down'),
                   coalesce(sum(r.score), 0)
            FROM feedback_rating r WHERE r.interaction_id IN (SELECT id FROM scope)
            """,
            [
                project.pk,
                datetime(date_from.year, date_from.month, date_from.day, tzinfo=UTC),
                datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1),
            ],
        )
        direct = cursor.fetchone()
    direct_ms = (time.perf_counter() - started) * 1000
    totals = overview.overall.totals
    from_rollups = (totals.interactions, totals.thumbs_up, totals.thumbs_down, totals.score_sum)
    print(
        f"30-day totals from rollups {from_rollups} vs direct count {tuple(direct)}: "
        f"{'equal' if tuple(direct) == from_rollups else 'DIFFERENT'}; the direct count took "
        f"{direct_ms:.0f} ms."
    )

    progress("timing the interactions list")
    list_url = reverse("dashboard:interactions", args=[PROJECT_SLUG])
    oldest_index = IndexVersion.objects.get(project=project, number=1)
    oldest_model = ModelVersion.objects.get(project=project, name=MODEL_NAMES[0])
    filters = [
        ("no filter", {}, InteractionFilters()),
        ("rating up", {"rating": "up"}, InteractionFilters(rating="up")),
        ("rating down", {"rating": "down"}, InteractionFilters(rating="down")),
        ("unrated", {"rating": "unrated"}, InteractionFilters(rating="unrated")),
        ("with a correction", {"has_correction": "on"}, InteractionFilters(has_correction=True)),
        (
            "oldest model version",
            {"model_version": str(oldest_model.pk)},
            InteractionFilters(model_version=oldest_model),
        ),
        (
            "oldest index version",
            {"index_version": str(oldest_index.pk)},
            InteractionFilters(index_version=oldest_index),
        ),
        (
            "last 7 days, down",
            {"rating": "down", "from": (today - timedelta(days=6)).isoformat()},
            InteractionFilters(rating="down", date_from=today - timedelta(days=6)),
        ),
    ]
    plans = []
    for label, query, selector_filters in filters:
        first = interactions_page(project=project, filters=selector_filters)
        pages = [("page 1", query)]
        if first.next_cursor:
            pages.append(("page 2", {**query, "cursor": first.next_cursor.encode()}))
        for page_label, page_query in pages:

            def get_list(page_query=page_query):
                response = client.get(list_url, page_query)
                assert response.status_code == 200, response.status_code

            p50, p95 = timed_runs(get_list, arguments.runs)
            rows.append((f"list, {label}, {page_label}", f"{p50:.1f}", f"{p95:.1f}"))
        recorder = QueryRecorder()
        with connection.execute_wrapper(recorder):
            get_list(page_query=query)
        page_queries = [query for query in recorder.queries if "LIMIT 51" in query[1]]
        _, sql, params = max(page_queries, key=lambda query: query[0])
        plans.append((label, plan_shape(sql, params)))

    progress("cost of the rollup marks on ingestion")
    ratios = sorted(
        trigger_cost(
            database_url=os.environ["DATABASE_URL"],
            project_id=Project.objects.get_or_create(
                slug="scale-ingestion", defaults={"name": "Ingestion"}
            )[0].pk,
        )
    )
    print(
        "COPY of 20 batches of 1,000 interactions, a transaction each, with the rollup-marking "
        f"trigger over without it: median {ratios[len(ratios) // 2]:.2f}, range "
        f"{ratios[0]:.2f} to {ratios[-1]:.2f} over {len(ratios)} alternated rounds."
    )

    print()
    print(table(["page", "p50 ms", "p95 ms"], rows))
    print("\nPlan of each list filter's slowest query (first page):")
    for label, shape in plans:
        print(f"- {label}: {shape}")


if __name__ == "__main__":
    main()
