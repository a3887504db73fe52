"""Health of the parts the platform needs: PostgreSQL with pgvector, Redis, Celery workers."""

from dataclasses import asdict, dataclass, field

import redis
from django.conf import settings
from django.db import connection

from config.celery import app as celery_app

CELERY_PING_TIMEOUT_SECONDS = 1.0


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
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        return ComponentHealth(ok=False, detail={"error": str(error)})
    finally:
        client.close()
    return ComponentHealth(ok=True)


def _celery_health(*, redis_ok: bool) -> ComponentHealth:
    if not redis_ok:
        return ComponentHealth(ok=False, detail={"error": "the broker (Redis) is unreachable"})
    try:
        replies = celery_app.control.ping(timeout=CELERY_PING_TIMEOUT_SECONDS)
    except Exception as error:  # kombu raises several unrelated types for a broken broker
        return ComponentHealth(ok=False, detail={"error": str(error)})
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        return ComponentHealth(ok=False, detail={"error": "no Celery worker answered"})
    return ComponentHealth(ok=True, detail={"workers": workers})


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
