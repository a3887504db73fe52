"""Settings come from the environment; production refuses to start without its secrets."""

import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.settings.database import database_url_from_config
from config.settings.environment import env_bool
from tests.conftest import REPOSITORY_ROOT, wait_for

PRINT_SETTINGS = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.DEBUG, settings.SECRET_KEY)"
)


def _start_django(settings_module: str, **environment: str) -> subprocess.CompletedProcess:
    variables = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SECRET_KEY", "DEBUG", "DATABASE_URL", "FLYWHEEL_VAR_DIR"}
    }
    variables |= {"DJANGO_SETTINGS_MODULE": settings_module, **environment}
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        cwd=REPOSITORY_ROOT,
        env=variables,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_refuse_to_start_without_a_secret_key():
    started = _start_django(
        "config.settings.production", DATABASE_URL="postgresql://app@db.internal/flywheel"
    )
    assert started.returncode != 0
    assert "SECRET_KEY must be set in production" in started.stderr


STRONG_SECRET_KEY = "Zr8m2QyVt0LkXw5nHcJ7sD1fGa9pBu3eKi6oNq4xWl_vMy-TgRh"  # 51 characters
# The variables README.md documents for production; everything else keeps its default.
PRODUCTION_ENVIRONMENT = {
    "SECRET_KEY": STRONG_SECRET_KEY,
    "DATABASE_URL": "postgresql://app@db.internal/flywheel",  # never connected to here
    "ALLOWED_HOSTS": "flywheel.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://flywheel.example.com",
}


def test_production_settings_start_with_a_strong_secret_key_and_debug_off():
    started = _start_django("config.settings.production", **PRODUCTION_ENVIRONMENT)
    assert started.returncode == 0, started.stderr
    assert started.stdout.split() == ["False", STRONG_SECRET_KEY]


def test_production_settings_refuse_a_secret_key_shorter_than_50_characters():
    started = _start_django(
        "config.settings.production", **PRODUCTION_ENVIRONMENT | {"SECRET_KEY": "x7" * 24 + "q"}
    )
    assert started.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY must be at least 50 random characters" in (
        started.stderr
    )


def test_production_settings_refuse_debug():
    started = _start_django("config.settings.production", **PRODUCTION_ENVIRONMENT, DEBUG="true")
    assert started.returncode != 0
    assert "ImproperlyConfigured: DEBUG must be off in production" in started.stderr


def test_the_deployment_check_passes_on_the_documented_production_variables():
    checked = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPOSITORY_ROOT,
        env={
            key: value
            for key, value in os.environ.items()
            # The browser tests' fixture allows the ORM in Playwright's event loop; a
            # production process never has that variable.
            if key
            not in {
                "DEBUG",
                "SECURE_SSL_REDIRECT",
                "SECURE_HSTS_SECONDS",
                "DJANGO_ALLOW_ASYNC_UNSAFE",
            }
        }
        | PRODUCTION_ENVIRONMENT
        | {"DJANGO_SETTINGS_MODULE": "config.settings.production"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "System check identified no issues" in checked.stdout


def test_production_redirects_plain_http_to_https_but_lets_health_probes_through():
    probe = (
        "import django; django.setup(); from django.test import Client; "
        "client = Client(HTTP_HOST='flywheel.example.com'); "
        "plain = client.get('/no-such-page'); "
        "secure = client.get('/no-such-page', HTTP_X_FORWARDED_PROTO='https'); "
        "health = client.get('/healthz'); "
        "print(plain.status_code, plain.headers['Location'], secure.status_code, "
        "secure.headers['Strict-Transport-Security'].replace(' ', ''), health.status_code)"
    )
    answered = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPOSITORY_ROOT,
        env={key: value for key, value in os.environ.items() if key != "DEBUG"}
        | PRODUCTION_ENVIRONMENT
        | {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            # Nothing listens on port 1: /healthz finds both down at once instead of waiting.
            "DATABASE_URL": "postgresql://app@127.0.0.1:1/flywheel",
            "REDIS_URL": "redis://127.0.0.1:1/0",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.split() == [
        "301",
        "https://flywheel.example.com/no-such-page",
        "404",
        "max-age=31536000;includeSubDomains",
        "503",
    ]


def test_development_generates_a_secret_key_once_and_keeps_it(tmp_path):
    database = "postgresql://app@db.internal/flywheel"  # never connected to here
    first = _start_django(
        "config.settings.development", FLYWHEEL_VAR_DIR=str(tmp_path), DATABASE_URL=database
    )
    second = _start_django(
        "config.settings.development", FLYWHEEL_VAR_DIR=str(tmp_path), DATABASE_URL=database
    )
    assert first.returncode == 0, first.stderr
    debug, key = first.stdout.split()
    assert debug == "False"
    assert len(key) >= 50
    assert second.stdout.split()[1] == key
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_debug_is_on_only_when_set(monkeypatch):
    monkeypatch.delenv("DEBUG", raising=False)
    assert env_bool("DEBUG") is False
    monkeypatch.setenv("DEBUG", "true")
    assert env_bool("DEBUG") is True
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DEBUG"):
        env_bool("DEBUG")


def _settings_value(settings_module: str, expression: str, **environment: str) -> str:
    """`expression` evaluated on the settings of a fresh process under `settings_module`."""
    variables = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SECRET_KEY", "DEBUG", "DATABASE_URL", "FLYWHEEL_VAR_DIR"}
    }
    started = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import django; django.setup(); from django.conf import settings; print({expression})",
        ],
        cwd=REPOSITORY_ROOT,
        env=variables | {"DJANGO_SETTINGS_MODULE": settings_module, **environment},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    return started.stdout.strip()


def test_a_dotenv_file_fills_in_what_the_environment_leaves_unset(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("DEBUG=true\nFLYWHEEL_RETRIEVAL_TOP_K=7\n")
    read = "settings.DEBUG, settings.FLYWHEEL_RETRIEVAL_TOP_K"
    database = "postgresql://app@db.internal/flywheel"  # never connected to here
    common = {"FLYWHEEL_ENV_FILE": str(dotenv), "FLYWHEEL_VAR_DIR": str(tmp_path)}

    from_the_file = _settings_value(
        "config.settings.development", read, DATABASE_URL=database, **common
    )
    environment_wins = _settings_value(
        "config.settings.development",
        read,
        DATABASE_URL=database,
        FLYWHEEL_RETRIEVAL_TOP_K="3",
        **common,
    )

    assert from_the_file == "True 7"
    assert environment_wins == "True 3"


def test_only_production_needs_collectstatic_for_its_hashed_static_files():
    storage = "settings.STORAGES['staticfiles']['BACKEND']"
    database = "postgresql://app@db.internal/flywheel"
    production = _settings_value(
        "config.settings.production",
        storage,
        DATABASE_URL=database,
        SECRET_KEY="Zr8m2QyVt0LkXw5nHcJ7sD1fGa9pBu3eKi6oNq4xWl_vMy-TgRh",
        ALLOWED_HOSTS="flywheel.example.com",
        CSRF_TRUSTED_ORIGINS="https://flywheel.example.com",
    )
    development = _settings_value("config.settings.development", storage, DATABASE_URL=database)

    assert production == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    assert development == "django.contrib.staticfiles.storage.StaticFilesStorage"


def _http_get(url: str):
    """The response, or None while nothing listens yet."""
    try:
        return urllib.request.urlopen(url, timeout=10)
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return None
        raise


@pytest.mark.django_db
def test_runserver_serves_pages_and_their_static_files_before_any_collectstatic(tmp_path):
    from django.db import connection

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {
        **{key: value for key, value in os.environ.items() if key != "DEBUG"},
        "DJANGO_SETTINGS_MODULE": "config.settings.development",
        "DATABASE_URL": database_url_from_config(connection.settings_dict),
        "STATIC_ROOT": str(tmp_path / "never-collected"),
        "FLYWHEEL_VAR_DIR": str(tmp_path),
    }
    log = (tmp_path / "runserver.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=REPOSITORY_ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # `/` leads to the dashboard, which sends a visitor who is not signed in to log in.
        page = wait_for(
            lambda: _http_get(f"{base}/"), what="runserver answering", deadline_seconds=90
        )
        assert page.status == 200
        assert page.url == f"{base}/accounts/login/?next=/dashboard/"
        html = page.read().decode()
        stylesheet = re.search(r'href="(/static/flywheel/dashboard\.css)"', html)
        assert stylesheet, html
        css = _http_get(base + stylesheet.group(1))
        assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
