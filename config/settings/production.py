"""Production settings: every secret and address comes from the environment, and the process
refuses to start on a missing or unsafe one rather than run with a guessable default.

Flywheel is meant to be served behind TLS: a proxy that terminates it must set
`X-Forwarded-Proto: https` (SECURE_PROXY_SSL_HEADER), and plain-HTTP requests are redirected to
HTTPS, except /healthz and /metrics, which probes and Prometheus call inside the deployment
over plain HTTP.
"""

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.database import database_config_from_url
from config.settings.environment import env_bool, env_int, env_str

# What Django's own deployment check (security.W009) asks of a secret key.
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_UNIQUE_CHARACTERS = 5
GENERATE_SECRET_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"


def _required(name: str) -> str:
    value = env_str(name)
    if not value:
        raise ImproperlyConfigured(f"{name} must be set in production")
    return value


def _strong_secret_key() -> str:
    key = _required("SECRET_KEY")
    if (
        len(key) < SECRET_KEY_MIN_LENGTH
        or len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
        or key.startswith("django-insecure-")
    ):
        raise ImproperlyConfigured(
            f"SECRET_KEY must be at least {SECRET_KEY_MIN_LENGTH} random characters in "
            f"production; generate one with: {GENERATE_SECRET_KEY}"
        )
    return key


if env_bool("DEBUG", False):
    raise ImproperlyConfigured(
        "DEBUG must be off in production: its error pages show settings and source code to "
        "anyone. Unset DEBUG (or use config.settings.development locally)."
    )
DEBUG = False
SECRET_KEY = _strong_secret_key()
DATABASES = {"default": database_config_from_url(_required("DATABASE_URL"))}

SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# Probes and Prometheus call these inside the deployment, over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
# Preloading is hard to undo and binds the whole domain: its owner opts in.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True

# Hashed, compressed and cached for a year: the image runs `collectstatic` at build time.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
