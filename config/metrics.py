"""`/metrics`: what operators watch, in Prometheus' text format.

Two sources, chosen by where the truth lives:

- **HTTP requests** are observed as they are answered (`RequestMetricsMiddleware`): a latency
  histogram per route — the URL pattern, never the raw path, so ids in paths cannot multiply
  the series — method and status. The web server runs several processes (gunicorn, 2 workers
  under `make run` and in the image) and a scrape reaches one of them, so under gunicorn the
  observations go to prometheus_client's multiprocess files (`PROMETHEUS_MULTIPROC_DIR`,
  which `gunicorn.conf.py` creates fresh for each server) and every process answers with the
  sum of all. A single process (`runserver`, the tests) keeps them in memory.
- **Everything the platform stores** is read at scrape time: from PostgreSQL the interactions,
  ratings and reviews ingested, the curation backlog, the jobs and the active versions; from
  Redis the depth of each Celery queue. The database already holds the exact figures, whatever
  process, worker or code path wrote them and across restarts; counters kept in process memory
  would need every write path instrumented, could count a write whose transaction rolled back,
  and would start again from zero with each process. The queries are grouped counts over
  indexed columns, one round trip each, run only when Prometheus scrapes.

A dependency that is down does not fail the scrape: its figures are left out and
`flywheel_database_up` or `flywheel_redis_up` says 0. The Redis queries give up after
`REDIS_TIMEOUT_SECONDS`, so an unreachable Redis never holds the scrape for long.

Scrapes are allowed with the bearer token `FLYWHEEL_METRICS_TOKEN` or from the addresses of
`FLYWHEEL_METRICS_ALLOW` (loopback by default); others get 401 (a token is configured: send
it) or 403.
"""

import hmac
import ipaddress
import os
import time
from collections.abc import Iterator
from datetime import timedelta

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry

from config.queues import Queue
from feedback.models import RatingSubmission, Review
from flywheel.models import EmbeddingModelVersion, IndexVersion, Interaction, ModelVersion
from flywheel.ratelimit import client_ip
from retrain.curation.pipeline import interactions_awaiting_curation
from retrain.models import Job

REDIS_TIMEOUT_SECONDS = 0.5
MULTIPROCESS_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# Chat answers on a CPU take seconds; the default buckets stop at 10 s.
REQUEST_DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
# From a dataset snapshot (seconds) to a LoRA run (up to FLYWHEEL_TRAINING_TIME_LIMIT_SECONDS).
JOB_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
# Any other method a client invents is counted as "other", so it cannot add series.
COUNTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Answered before URL routing (static files, the HTTPS redirect) or by no pattern at all.
NO_ROUTE = "(none)"

REQUEST_DURATION = Histogram(
    "flywheel_http_request_duration_seconds",
    "Time to answer an HTTP request, until the response starts (a streamed chat answer: its "
    "first byte), by URL pattern, method and status. Its _count is the number of requests.",
    ["route", "method", "status"],
    buckets=REQUEST_DURATION_BUCKETS,
    registry=None,
)


def request_route(request: HttpRequest) -> str:
    match = request.resolver_match
    if match is None:
        return NO_ROUTE
    return match.route or match.view_name or NO_ROUTE


class RequestMetricsMiddleware:
    """Observes every request's duration, route, method and status."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = self.get_response(request)
        method = request.method if request.method in COUNTED_METHODS else "other"
        REQUEST_DURATION.labels(
            route=request_route(request), method=method, status=str(response.status_code)
        ).observe(time.perf_counter() - started)
        return response


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def _database_metrics() -> list[Metric]:
    interactions = CounterMetricFamily(
        "flywheel_interactions",
        "Interactions stored, by project and source (chat: served by Flywheel; log: logged by "
        "the app).",
        labels=["project", "source"],
    )
    for row in Interaction.objects.values("project__slug", "source").annotate(count=Count("pk")):
        interactions.add_metric([row["project__slug"], row["source"]], row["count"])

    ratings = CounterMetricFamily(
        "flywheel_ratings",
        "Ratings received, by project and thumb: every submission, also one that replaced the "
        "rater's earlier rating of the same answer.",
        labels=["project", "thumb"],
    )
    for row in RatingSubmission.objects.values(
        "rating__interaction__project__slug", "thumb"
    ).annotate(count=Count("pk")):
        ratings.add_metric(
            [row["rating__interaction__project__slug"], row["thumb"] or "none"], row["count"]
        )

    reviews = CounterMetricFamily(
        "flywheel_reviews", "Reviews submitted, by project.", labels=["project"]
    )
    for row in Review.objects.values("interaction__project__slug").annotate(count=Count("pk")):
        reviews.add_metric([row["interaction__project__slug"]], row["count"])

    backlog = _gauge(
        "flywheel_curation_backlog",
        "Rated or reviewed interactions not curated since their feedback last changed (the "
        "curation sweep's test), by project.",
        ["project"],
    )
    awaiting = interactions_awaiting_curation().values("pk")
    for row in (
        Interaction.objects.filter(pk__in=awaiting)
        .values("project__slug")
        .annotate(count=Count("pk"))
    ):
        backlog.add_metric([row["project__slug"]], row["count"])

    return [interactions, ratings, reviews, backlog, *_job_metrics(), *_version_metrics()]


def _job_metrics() -> list[Metric]:
    jobs = _gauge("flywheel_jobs", "Jobs by kind and state.", ["kind", "state"])
    counts = {
        (row["kind"], row["state"]): row["count"]
        for row in Job.objects.values("kind", "state").annotate(count=Count("pk"))
    }
    # Every combination, zeros included: an alert on failed jobs needs a series to compare.
    for kind in Job.Kind.values:
        for state in Job.State.values:
            jobs.add_metric([kind, state], counts.get((kind, state), 0))

    durations = HistogramMetricFamily(
        "flywheel_job_duration_seconds",
        "Finished jobs, from their first start to their end (retries included), by kind and "
        "final state.",
        labels=["kind", "state"],
    )
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    at_most = {
        f"at_most_{bound}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
        for bound in JOB_DURATION_BUCKETS
    }
    finished = (
        Job.objects.filter(
            state__in=Job.FINISHED_STATES, started_at__isnull=False, finished_at__isnull=False
        )
        .annotate(duration=duration)
        .values("kind", "state")
        .annotate(count=Count("pk"), total=Sum("duration"), **at_most)
        .order_by("kind", "state")
    )
    for row in finished:
        buckets = [(str(float(bound)), row[f"at_most_{bound}"]) for bound in JOB_DURATION_BUCKETS]
        durations.add_metric(
            [row["kind"], row["state"]],
            buckets=[*buckets, ("+Inf", row["count"])],
            sum_value=row["total"].total_seconds(),
        )
    return [jobs, durations]


def _version_metrics() -> list[Metric]:
    model = _gauge(
        "flywheel_production_model_version",
        "The id of each project's production model version, named in `version`.",
        ["project", "version"],
    )
    for row in ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).values(
        "project__slug", "name", "pk"
    ):
        model.add_metric([row["project__slug"], row["name"]], row["pk"])

    retriever = _gauge(
        "flywheel_production_embedding_model_version",
        "The id of each project's production retriever (embedding model version), named in "
        "`version`.",
        ["project", "version"],
    )
    for row in EmbeddingModelVersion.objects.filter(
        status=EmbeddingModelVersion.Status.PRODUCTION
    ).values("project__slug", "name", "pk"):
        retriever.add_metric([row["project__slug"], row["name"]], row["pk"])

    index = _gauge(
        "flywheel_active_index_version",
        "The number of each project's active index version.",
        ["project"],
    )
    for active in IndexVersion.objects.filter(status=IndexVersion.Status.ACTIVE).values(
        "project__slug", "number"
    ):
        index.add_metric([active["project__slug"]], active["number"])
    return [model, retriever, index]


def _queue_metrics() -> list[Metric]:
    up = _gauge("flywheel_redis_up", "1 when Redis (the Celery broker) answered the scrape.", [])
    client = redis.Redis.from_url(
        settings.CELERY_BROKER_URL,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        with client.pipeline(transaction=False) as pipeline:
            for queue in Queue:
                pipeline.llen(queue.value)
            lengths = pipeline.execute()
    except redis.RedisError:
        up.add_metric([], 0)
        return [up]
    finally:
        client.close()
    up.add_metric([], 1)
    depth = _gauge(
        "flywheel_celery_queue_length",
        "Tasks waiting in each Celery queue (not counting those a worker has taken).",
        ["queue"],
    )
    for queue, length in zip(Queue, lengths, strict=True):
        depth.add_metric([queue.value], length)
    return [up, depth]


class PlatformCollector(Collector):
    """The stored figures, read from PostgreSQL and Redis at each scrape."""

    def collect(self) -> Iterator[Metric]:
        database_up = _gauge(
            "flywheel_database_up", "1 when PostgreSQL answered the scrape's queries.", []
        )
        try:
            stored, database_answered = _database_metrics(), True
        except DatabaseError:
            stored, database_answered = [], False
        database_up.add_metric([], 1 if database_answered else 0)
        yield database_up
        yield from stored
        yield from _queue_metrics()


def scrape_registry() -> CollectorRegistry:
    """What one scrape reports: the requests of every web process and the stored figures."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROCESS_DIRECTORY_VARIABLE):
        MultiProcessCollector(registry)
    else:
        registry.register(REQUEST_DURATION)
    registry.register(PlatformCollector())
    return registry


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [
            ipaddress.ip_network(entry, strict=False) for entry in settings.FLYWHEEL_METRICS_ALLOW
        ]
    except ValueError as error:
        raise ImproperlyConfigured(f"FLYWHEEL_METRICS_ALLOW: {error}") from error


def _address_allowed(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(client_ip(request))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in _allowed_networks())


def _token_presented(request: HttpRequest) -> bool:
    token = settings.FLYWHEEL_METRICS_TOKEN
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return (
        bool(token)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(presented.strip().encode(), token.encode())
    )


def scrape_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the scrape may proceed; otherwise the answer that refuses it."""
    if _token_presented(request) or _address_allowed(request):
        return None
    if settings.FLYWHEEL_METRICS_TOKEN:
        response = HttpResponse("A valid bearer token is required.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse("Metrics are not served to this address.\n", status=403)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    refusal = scrape_refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)
