"""Health of the parts the platform needs: PostgreSQL with pgvector, Redis, Celery workers.

The database and Redis are asked on every call (a query and a PING: milliseconds). A Celery
ping is a broadcast that waits its whole timeout for replies, so /healthz answers from the
latest one and refreshes it in the background once it is `CELERY_HEALTH_MAX_AGE_SECONDS` old:
a probe never holds a request slot for a second, and a worker that died shows within
`CELERY_HEALTH_MAX_AGE_SECONDS + CELERY_PING_TIMEOUT_SECONDS`.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import redis
from django.conf import settings
from django.db import connection

from config.celery import app as celery_app

CELERY_PING_TIMEOUT_SECONDS = 1.0
CELERY_HEALTH_MAX_AGE_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 1.0


@dataclass
class ComponentHealth:
    ok: bool
    detail: dict = field(default_factory=dict)


def _database_health() -> tuple[ComponentHealth, ComponentHealth]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
    except Exception as error:  # any failure to reach the database is the finding itself
        failure = {"error": str(error).strip().splitlines()[0] if str(error) else repr(error)}
        return ComponentHealth(ok=False, detail=failure), ComponentHealth(
            ok=False, detail={"error": "database unreachable"}
        )
    pgvector = (
        ComponentHealth(ok=True, detail={"version": row[0]})
        if row
        else ComponentHealth(ok=False, detail={"error": "the vector extension is not installed"})
    )
    return ComponentHealth(ok=True, detail={"vendor": connection.vendor}), pgvector


def _redis_health() -> ComponentHealth:
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    except redis.RedisError as error:
        return ComponentHealth(ok=False, detail={"error": str(error)})
    finally:
        client.close()
    return ComponentHealth(ok=True)


def celery_ping() -> ComponentHealth:
    """Broadcast a ping and wait `CELERY_PING_TIMEOUT_SECONDS` for the workers' replies."""
    try:
        replies = celery_app.control.ping(timeout=CELERY_PING_TIMEOUT_SECONDS)
    except Exception as error:  # kombu raises several unrelated types for a broken broker
        return ComponentHealth(ok=False, detail={"error": str(error)})
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        return ComponentHealth(ok=False, detail={"error": "no Celery worker answered"})
    return ComponentHealth(ok=True, detail={"workers": workers})


class LatestCheck:
    """The latest result of a slow check, refreshed by one background thread at a time once it
    is older than `max_age_seconds`. Only the first call of a process waits for the check."""

    def __init__(self, check: Callable[[], ComponentHealth], *, max_age_seconds: float):
        self._check = check
        self._max_age_seconds = max_age_seconds
        self._lock = threading.Lock()
        self._latest: ComponentHealth | None = None
        self._checked_at = 0.0
        self._refreshing = False

    def get(self) -> ComponentHealth:
        with self._lock:
            latest, age = self._latest, time.monotonic() - self._checked_at
            refresh_in_background = (
                latest is not None and age > self._max_age_seconds and not self._refreshing
            )
            if refresh_in_background:
                self._refreshing = True
        if latest is None:
            return self._refresh()
        if refresh_in_background:
            threading.Thread(target=self._refresh, name="health-refresh", daemon=True).start()
        return ComponentHealth(ok=latest.ok, detail=latest.detail | {"age_seconds": round(age, 1)})

    def _refresh(self) -> ComponentHealth:
        result = None
        try:
            result = self._check()
            return result
        finally:
            with self._lock:
                self._refreshing = False
                if result is not None:
                    self._latest, self._checked_at = result, time.monotonic()

    def forget(self) -> None:
        """Drop the latest result: the next call checks again and waits for it."""
        with self._lock:
            self._latest = None


celery_health = LatestCheck(celery_ping, max_age_seconds=CELERY_HEALTH_MAX_AGE_SECONDS)


def _celery_health(*, redis_ok: bool) -> ComponentHealth:
    if not redis_ok:
        return ComponentHealth(ok=False, detail={"error": "the broker (Redis) is unreachable"})
    return celery_health.get()


def platform_health() -> dict:
    """A JSON-ready report; `failing` names every part that is down."""
    database, pgvector = _database_health()
    redis_health = _redis_health()
    components = {
        "database": database,
        "pgvector": pgvector,
        "redis": redis_health,
        "celery": _celery_health(redis_ok=redis_health.ok),
    }
    failing = [name for name, component in components.items() if not component.ok]
    return {
        "status": "ok" if not failing else "failing",
        "failing": failing,
        "components": {name: asdict(component) for name, component in components.items()},
    }
