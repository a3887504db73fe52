"""Write load on the web server as `make run` starts it: open-loop ratings and interaction
batches, and the same load with Redis stopped in the middle.

The server is the runner's own gunicorn command (config.platform_runner.child_commands) on a
database of the benchmark's own and a private redis-server; no Celery worker runs, so the
figures are the web tier's. The generator is open-loop: request i is due at start + i / rate
whether or not earlier ones have been answered, and its latency counts from when it was due, so
a server that falls behind shows it in the percentiles (no coordinated omission). It keeps at
most --max-in-flight requests outstanding; a request due while that many are waiting is not
sent and counted as shed. Everything stays on the loopback interface.

Acknowledged counts come from the 201 responses; stored counts from the database afterwards,
by a prefix unique to each phase. They must be equal: an acknowledged write that is not stored
is a loss.

Run from the repository root: .venv/bin/python bench/load.py [--rates 100,250,500]
[--duration 30] [--outage-rate 500]
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import REPOSITORY_ROOT, bench_django_setup, machine_context, table

DATABASE_NAME = "flywheel_bench_load"
INTERACTIONS_TO_RATE = 1000
BATCH_SIZE = 100
REQUEST_TIMEOUT_SECONDS = 30.0
# gunicorn closes a keep-alive connection idle for 2 s; one idle longer is not reused.
IDLE_CONNECTION_REUSE_SECONDS = 1.5
SERVER_START_DEADLINE_SECONDS = 180
CPU_SAMPLE_SECONDS = 0.5
LOG_DIR = REPOSITORY_ROOT / "var" / "bench-load"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} / {five:.1f}"


# --- the services -------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of the benchmark's own, which it may stop and start on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise SystemExit("redis-server is not installed")
        self.process = subprocess.Popen(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self._answers():
            if time.monotonic() > deadline:
                raise SystemExit("the private redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping())
        except redis.RedisError:
            return False


def web_server_start(*, database_url: str, redis_url: str, port: int) -> subprocess.Popen:
    """gunicorn exactly as `make run` starts it, with the environment it gives the web child."""
    from config.platform_runner import child_commands

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    environment = os.environ | {
        "DJANGO_SETTINGS_MODULE": "config.settings.development",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "FLYWHEEL_TORCH_THREADS": "1",
        # The benchmark is one client address sending thousands of ratings a second.
        "FLYWHEEL_RATING_RATE_LIMIT": str(10**9),
    }
    with (LOG_DIR / "gunicorn.log").open("wb") as log:
        return subprocess.Popen(
            child_commands(host="127.0.0.1", port=port)["web"],
            cwd=REPOSITORY_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def server_wait(port: int) -> None:
    deadline = time.monotonic() + SERVER_START_DEADLINE_SECONDS
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                log = LOG_DIR / "gunicorn.log"
                raise SystemExit(f"gunicorn did not answer; see {log}") from error
            time.sleep(0.2)


def project_seed() -> tuple[str, list[str]]:
    """A project, its secret key and the interactions the ratings are about."""
    from flywheel.models import Project
    from flywheel.services import api_key_create
    from flywheel.services.interactions import interactions_log_batch

    project = Project.objects.create(name="Load", slug="load")
    raw_key = api_key_create(project=project, kind="secret", name="load").raw_key
    logged = interactions_log_batch(
        project=project,
        interactions=[
            {
                "messages": [{"role": "user", "content": f"Question {number}?"}],
                "response": f"Answer {number}.",
            }
            for number in range(INTERACTIONS_TO_RATE)
        ],
    )
    return raw_key, [str(item.id) for item in logged]


# --- the open-loop generator --------------------------------------------------------------------


@dataclass
class Outcome:
    due_at: float  # seconds since the phase started
    latency_ms: float
    status: int  # 0: no HTTP answer (refused, reset, timed out)
    acknowledged: int  # rows the 201 answer acknowledged


@dataclass
class PhaseResult:
    outcomes: list[Outcome] = field(default_factory=list)
    shed: int = 0
    duration_seconds: float = 0.0


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections to one server, each carrying one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def acquire(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """(reader, writer, whether the connection carried a request before)."""
        now = time.monotonic()
        while self.idle:
            reader, writer, idle_since = self.idle.pop()
            if now - idle_since < IDLE_CONNECTION_REUSE_SECONDS and not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return reader, writer, False

    def release(self, reader, writer) -> None:
        self.idle.append((reader, writer, time.monotonic()))

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


class ClosedBeforeAnswering(ConnectionResetError):
    """The server closed the connection without a byte of an answer."""

    def __init__(self, *, reused: bool) -> None:
        super().__init__("the server closed the connection without answering")
        self.reused = reused


async def http_post(pool: ConnectionPool, request: bytes) -> tuple[int, bytes]:
    try:
        return await _http_post_once(pool, request)
    except ClosedBeforeAnswering as error:
        # A kept-alive connection the server closed as idle just as the request went out:
        # the request was never read, so sending it again on a new connection is safe (what
        # every HTTP client does). A new connection closed unanswered is an error.
        if not error.reused:
            raise
        return await _http_post_once(pool, request)


async def _http_post_once(pool: ConnectionPool, request: bytes) -> tuple[int, bytes]:
    reader, writer, reused = await pool.acquire()
    try:
        try:
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
        except (ConnectionResetError, BrokenPipeError) as error:
            raise ClosedBeforeAnswering(reused=reused) from error
        if not status_line:
            raise ClosedBeforeAnswering(reused=reused)
        status = int(status_line.split()[1])
        length, keep_alive = 0, True
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                keep_alive = False
        body = await reader.readexactly(length)
    except BaseException:
        writer.close()
        raise
    if keep_alive:
        pool.release(reader, writer)
    else:
        writer.close()
    return status, body


def post_request(path: str, raw_key: str, payload: dict) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {raw_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def open_loop(
    *,
    port: int,
    rate: float,
    duration_seconds: float,
    make_request: Callable[[int], bytes],
    acknowledged: Callable[[bytes], int],
    max_in_flight: int,
    at_seconds: dict[float, Callable[[], None]] | None = None,
) -> PhaseResult:
    """Send request i at start + i / rate for `duration_seconds`; `at_seconds` runs actions
    (stop Redis, start it) at given offsets, in a thread so the schedule keeps going."""
    pool = ConnectionPool("127.0.0.1", port)
    result = PhaseResult()
    in_flight: set[asyncio.Task] = set()
    actions = sorted((at_seconds or {}).items())
    loop = asyncio.get_running_loop()
    started = time.monotonic()

    async def one(number: int, due_at: float) -> None:
        try:
            status, body = await asyncio.wait_for(
                http_post(pool, make_request(number)), REQUEST_TIMEOUT_SECONDS
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            status, body = 0, b""
        latency_ms = (time.monotonic() - started - due_at) * 1000
        result.outcomes.append(
            Outcome(
                due_at=due_at,
                latency_ms=latency_ms,
                status=status,
                acknowledged=acknowledged(body) if status == 201 else 0,
            )
        )

    total = int(rate * duration_seconds)
    for number in range(total):
        due_at = number / rate
        while actions and actions[0][0] <= due_at:
            _, action = actions.pop(0)
            loop.run_in_executor(None, action)
        delay = started + due_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_in_flight:
            result.shed += 1
            continue
        task = asyncio.create_task(one(number, due_at))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    for _, action in actions:
        await loop.run_in_executor(None, action)
    if in_flight:
        await asyncio.wait(in_flight)
    result.duration_seconds = time.monotonic() - started
    pool.close()
    return result


# --- the two kinds of write ---------------------------------------------------------------------


@dataclass
class Workload:
    kind: str
    path: str
    make_payload: Callable[[str, int], dict]  # (phase prefix, request number) -> JSON body
    acknowledged: Callable[[bytes], int]
    stored: Callable[[str], int]  # phase prefix -> rows in the database


def workloads(interaction_ids: list[str]) -> dict[str, Workload]:
    from feedback.models import Rating
    from flywheel.models import Interaction

    def rating(prefix: str, number: int) -> dict:
        return {
            "interaction_id": interaction_ids[number % len(interaction_ids)],
            "rater_id": f"{prefix}-{number}",
            "thumb": "up" if number % 3 else "down",
            "score": 1 + number % 5,
        }

    def batch(prefix: str, number: int) -> dict:
        return {
            "interactions": [
                {
                    "idempotency_key": f"{prefix}-{number}-{item}",
                    "messages": [
                        {"role": "system", "content": "You answer questions about Quillmate."},
                        {"role": "user", "content": f"How do I export shelf {number}/{item}?"},
                    ],
                    "response": "Open the shelf, choose Export, and pick Markdown or PDF.",
                    "model": "my-llm",
                    "latency_ms": 420,
                    "metadata": {"bench": prefix},
                }
                for item in range(BATCH_SIZE)
            ]
        }

    return {
        "ratings": Workload(
            kind="ratings",
            path="/api/v1/ratings",
            make_payload=rating,
            acknowledged=lambda body: len(json.loads(body)["ratings"]),
            stored=lambda prefix: Rating.objects.filter(rater_id__startswith=f"{prefix}-").count(),
        ),
        "batches": Workload(
            kind="batches",
            path="/api/v1/interactions",
            make_payload=batch,
            acknowledged=lambda body: sum(
                1 for item in json.loads(body)["interactions"] if item["created"]
            ),
            stored=lambda prefix: Interaction.objects.filter(
                idempotency_key__startswith=f"{prefix}-"
            ).count(),
        ),
    }


class CpuMeter:
    """CPU seconds spent by gunicorn's processes, by the PostgreSQL backends serving the
    benchmark's database and by the generator (this process) during a phase: what each request
    costs, and so which of them runs out of cores first.

    Sampled every CPU_SAMPLE_SECONDS in a thread, because backends come and go during a phase
    (Django closes a connection older than CONN_MAX_AGE) and a process that has exited can no
    longer be asked; at most one interval of a departed process's time is missed."""

    def __init__(self, web_pid: int) -> None:
        self.web_pid = web_pid
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first: dict[tuple[str, int], float] = {}
        self._latest: dict[tuple[str, int], float] = {}

    def start(self) -> None:
        self._stop.clear()
        self._first, self._latest = {}, {}
        self._record(first=True)
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._record(first=False)
        spent = {"gunicorn": 0.0, "postgres": 0.0, "generator": 0.0}
        for (group, pid), seconds in self._latest.items():
            spent[group] += seconds - self._first.get((group, pid), 0.0)
        return spent

    def _sample_until_stopped(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(CPU_SAMPLE_SECONDS):
                self._record(first=False)
        finally:
            connection.close()

    def _record(self, *, first: bool) -> None:
        for key, seconds in self._sample().items():
            if first:
                self._first[key] = seconds
            self._latest[key] = max(seconds, self._latest.get(key, 0.0))

    def _sample(self) -> dict[tuple[str, int], float]:
        import psutil
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [DATABASE_NAME],
            )
            backend_pids = [row[0] for row in cursor.fetchall()]
        web = psutil.Process(self.web_pid)
        groups = {
            "gunicorn": [web, *web.children(recursive=True)],
            "postgres": [psutil.Process(pid) for pid in backend_pids if psutil.pid_exists(pid)],
        }
        sample = {("generator", 0): time.process_time()}
        for group, processes in groups.items():
            for process in processes:
                try:
                    times = process.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                sample[(group, process.pid)] = times.user + times.system
        return sample


@dataclass
class PhaseReport:
    result: PhaseResult
    stored: int
    load: str
    cpu_seconds: dict[str, float]

    @property
    def acknowledged(self) -> int:
        return sum(outcome.acknowledged for outcome in self.result.outcomes)

    def cpu_ms_per_request(self) -> list[str]:
        answered = max(1, sum(1 for outcome in self.result.outcomes if outcome.status))
        return [
            f"{1000 * self.cpu_seconds[group] / answered:.1f}"
            for group in ("gunicorn", "postgres", "generator")
        ]


def phase_run(
    workload: Workload,
    *,
    port: int,
    raw_key: str,
    rate: float,
    duration_seconds: float,
    max_in_flight: int,
    cpu_meter: CpuMeter,
    at_seconds: dict[float, Callable[[], None]] | None = None,
) -> PhaseReport:
    prefix = f"{workload.kind}-{rate:g}-{uuid.uuid4().hex[:8]}"
    cpu_meter.start()
    result = asyncio.run(
        open_loop(
            port=port,
            rate=rate,
            duration_seconds=duration_seconds,
            make_request=lambda number: post_request(
                workload.path, raw_key, workload.make_payload(prefix, number)
            ),
            acknowledged=workload.acknowledged,
            max_in_flight=max_in_flight,
            at_seconds=at_seconds,
        )
    )
    cpu_seconds = cpu_meter.stop()
    return PhaseReport(
        result=result, stored=workload.stored(prefix), load=load_average(), cpu_seconds=cpu_seconds
    )


def summary_row(label: str, outcomes: list[Outcome], seconds: float) -> list[object]:
    if not outcomes:
        return [label, 0, "-", "-", "-", "-", 0]
    latencies = np.asarray([outcome.latency_ms for outcome in outcomes])
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    errors = sum(1 for outcome in outcomes if not 200 <= outcome.status < 300)
    answered = sum(1 for outcome in outcomes if outcome.status)
    return [
        label,
        len(outcomes),
        f"{answered / seconds:.0f}",
        f"{p50:.1f}",
        f"{p95:.1f}",
        f"{p99:.1f}",
        errors,
    ]


def statuses(outcomes: list[Outcome]) -> str:
    counts: dict[int, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return ", ".join(
        f"{status or 'no answer'}: {count}" for status, count in sorted(counts.items())
    )


COUNT_HEADERS = [
    "phase",
    "shed",
    "acknowledged rows",
    "stored rows",
    "CPU ms/request: gunicorn",
    "postgres",
    "generator",
    "load 1/5 min",
]
LATENCY_HEADERS = ["phase", "sent", "answered/s", "p50 ms", "p95 ms", "p99 ms", "errors"]


def count_row(label: str, report: PhaseReport) -> list[object]:
    return [
        label,
        report.result.shed,
        report.acknowledged,
        report.stored,
        *report.cpu_ms_per_request(),
        report.load,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="100,250,500", help="requests per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--kinds", default="ratings,batches")
    parser.add_argument("--outage-rate", type=float, default=500.0, help="ratings/s, Redis down")
    parser.add_argument("--outage-batch-rate", type=float, default=10.0)
    parser.add_argument("--max-in-flight", type=int, default=256)
    arguments = parser.parse_args()
    rates = [float(rate) for rate in arguments.rates.split(",")]

    database_url = bench_django_setup(DATABASE_NAME)
    print(machine_context())
    raw_key, interaction_ids = project_seed()
    redis_server = PrivateRedis()
    redis_server.start()
    port = free_port()
    web = web_server_start(database_url=database_url, redis_url=redis_server.url, port=port)
    loads = workloads(interaction_ids)
    phase = partial(
        phase_run,
        port=port,
        raw_key=raw_key,
        max_in_flight=arguments.max_in_flight,
        cpu_meter=CpuMeter(web.pid),
    )
    try:
        server_wait(port)
        # Every gunicorn thread imports its lazy modules and opens its database connection.
        warm_up = phase(loads["ratings"], rate=50, duration_seconds=5)
        print(f"warm-up: {statuses(warm_up.result.outcomes)}")
        latency_rows, count_rows = [], []
        for kind in arguments.kinds.split(","):
            for rate in rates:
                report = phase(loads[kind], rate=rate, duration_seconds=arguments.duration)
                label = f"{kind} at {rate:g}/s"
                latency_rows.append(
                    summary_row(label, report.result.outcomes, report.result.duration_seconds)
                )
                count_rows.append(count_row(label, report))
                print(f"{label}: {statuses(report.result.outcomes)}", flush=True)
        print()
        print(table(LATENCY_HEADERS, latency_rows))
        print()
        print(table(COUNT_HEADERS, count_rows))

        third = arguments.duration / 3
        print(f"\nRedis stopped from {third:.0f}s to {2 * third:.0f}s of each phase:")
        latency_rows, count_rows = [], []
        for kind, rate in (
            ("ratings", arguments.outage_rate),
            ("batches", arguments.outage_batch_rate),
        ):
            report = phase(
                loads[kind],
                rate=rate,
                duration_seconds=arguments.duration,
                at_seconds={third: redis_server.stop, 2 * third: redis_server.start},
            )
            label = f"{kind} at {rate:g}/s"
            for window, low, high in (
                ("Redis up", 0, third),
                ("Redis down", third, 2 * third),
                ("Redis back", 2 * third, arguments.duration),
            ):
                outcomes = [o for o in report.result.outcomes if low <= o.due_at < high]
                latency_rows.append(summary_row(f"{label}, {window}", outcomes, third))
            count_rows.append(count_row(label, report))
            print(f"{label} with the outage: {statuses(report.result.outcomes)}", flush=True)
        print()
        print(table(LATENCY_HEADERS, latency_rows))
        print()
        print(table(COUNT_HEADERS, count_rows))
    finally:
        web.terminate()
        web.wait(timeout=60)
        redis_server.stop()


if __name__ == "__main__":
    main()
