"""Settings come from the environment; production refuses to start without its secrets."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.settings.environment import env_bool
from tests.conftest import REPOSITORY_ROOT

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


def test_production_settings_start_with_a_secret_key_and_debug_off():
    started = _start_django(
        "config.settings.production",
        SECRET_KEY="a-long-random-production-secret",
        DATABASE_URL="postgresql://app@db.internal/flywheel",
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.split() == ["False", "a-long-random-production-secret"]


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
