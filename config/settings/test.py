"""Test settings: the development stack, with Celery on a Redis database of its own so a test
run never meets the tasks or workers of a `make run` on the same machine."""

from urllib.parse import urlsplit, urlunsplit

from config.settings.development import *  # noqa: F403
from config.settings.development import REDIS_URL
from config.settings.environment import env_path, env_str


def _redis_url_with_database(url: str, database: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


TEST_REDIS_URL = env_str("FLYWHEEL_TEST_REDIS_URL") or _redis_url_with_database(REDIS_URL, 15)
REDIS_URL = TEST_REDIS_URL
CELERY_BROKER_URL = TEST_REDIS_URL
CELERY_RESULT_BACKEND = TEST_REDIS_URL

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# The live server's threads must not keep connections open past a test, or the test database
# cannot be dropped at the end of the run.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
# Lets several test runs share one PostgreSQL server (each with its own Redis database too).
DATABASES["default"]["TEST"] = {  # noqa: F405
    "NAME": env_str("FLYWHEEL_TEST_DATABASE_NAME", "test_flywheel")
}

# Job outputs of the suite stay apart from a local installation's.
FLYWHEEL_ARTIFACTS_DIR = env_path("FLYWHEEL_ARTIFACTS_DIR", VAR_DIR / "test-artifacts")  # noqa: F405
FLYWHEEL_ARTIFACTS_CACHE = env_path("FLYWHEEL_ARTIFACTS_CACHE", VAR_DIR / "test-artifacts-cache")  # noqa: F405
FLYWHEEL_GOLDEN_SETS_DIR = env_path("FLYWHEEL_GOLDEN_SETS_DIR", VAR_DIR / "test-golden-sets")  # noqa: F405
