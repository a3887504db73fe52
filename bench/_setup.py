"""What every benchmark shares: a database of its own, Django, a line naming the machine, a
real HTTP server, and the way figures are printed.

Benchmarks never touch the development or test data: they run against `flywheel_bench`, a
database recreated on each run inside the embedded PostgreSQL under var/postgres.
"""

import os
import platform
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
BENCH_DATABASE_NAME = "flywheel_bench"


def _url_with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def bench_django_join(database_name: str) -> None:
    """Set Django up on an existing database of the embedded PostgreSQL (one a benchmark left
    behind), without recreating or migrating it."""
    from config.settings.database import embedded_database_url
    from config.settings.environment import env_path

    server_url = embedded_database_url(
        env_path("FLYWHEEL_VAR_DIR", REPOSITORY_ROOT / "var") / "postgres"
    )
    os.environ["DATABASE_URL"] = _url_with_database(server_url, database_name)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.development"
    import django

    django.setup()


def bench_django_setup(database_name: str = BENCH_DATABASE_NAME) -> str:
    """Start (or join) the embedded PostgreSQL, recreate the bench database, set Django up on
    it and migrate. Returns the database URL, for raw psycopg connections.

    Recreating drops the database WITH (FORCE): two benchmarks on the same name must not run
    at the same time."""
    import psycopg

    from config.settings.database import embedded_database_url
    from config.settings.environment import env_path

    var_dir = env_path("FLYWHEEL_VAR_DIR", REPOSITORY_ROOT / "var")
    server_url = embedded_database_url(var_dir / "postgres")
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{database_name}"')
    database_url = _url_with_database(server_url, database_name)
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.development"

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    return database_url


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def machine_context() -> str:
    """One line: CPU, cores, memory, Python, PostgreSQL and pgvector, and the load the
    machine already had, since other work on it slows every figure. Needs Django set up."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres_version = cursor.fetchone()[0].split()[0]
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        pgvector_version = cursor.fetchone()[0]
    return (
        f"{_cpu_model()}, {os.cpu_count()} cores, {_memory_gib():.0f} GiB RAM, "
        f"Python {platform.python_version()}, PostgreSQL {postgres_version}, "
        f"pgvector {pgvector_version}, load average {os.getloadavg()[0]:.1f} at start"
    )


@contextmanager
def wsgi_server() -> Iterator[str]:
    """Serve the Django application over real HTTP on a free port of 127.0.0.1, in a
    background thread with a thread per request (as `runserver` does); yields the base URL."""
    import logging

    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()  # sets Django's logging up again
    # One access-log line per request would interleave with the figures.
    logging.getLogger("django.server").setLevel(logging.WARNING)

    class NoDelayRequestHandler(WSGIRequestHandler):
        # TCP_NODELAY, as gunicorn sets it: without it, each response's second segment waits
        # out the client's delayed ACK (40 ms a request, measured).
        disable_nagle_algorithm = True

    server = ThreadedWSGIServer(("127.0.0.1", 0), NoDelayRequestHandler, allow_reuse_address=False)
    server.set_app(application)
    thread = threading.Thread(target=server.serve_forever, name="wsgi-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def percentiles(values: Sequence[float]) -> tuple[float, float]:
    """p50 and p95 (linear interpolation between the nearest samples)."""
    p50, p95 = np.percentile(np.asarray(values, dtype=float), [50, 95])
    return float(p50), float(p95)


def _is_figure(cell: str) -> bool:
    return cell[:1].isdigit() or cell[:1] == "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, so that what a benchmark prints can be pasted into bench/README.md.
    Columns of figures are aligned to the right, where their digits line up."""
    cells = [[str(cell) for cell in row] for row in rows]
    columns = range(len(headers))
    widths = [max(len(headers[i]), *(len(row[i]) for row in cells)) for i in columns]
    figures = [all(_is_figure(row[i]) for row in cells) for i in columns]

    def line(values: Sequence[str]) -> str:
        padded = [
            values[i].rjust(widths[i]) if figures[i] else values[i].ljust(widths[i])
            for i in columns
        ]
        return "| " + " | ".join(padded) + " |"

    separator = (
        "| "
        + " | ".join(
            "-" * (widths[i] - 1) + ":" if figures[i] else "-" * widths[i] for i in columns
        )
        + " |"
    )
    return "\n".join([line(list(headers)), separator, *map(line, cells)])
