"""gunicorn's settings file: gunicorn reads `gunicorn.conf.py` from its working directory, and
`make run` and the Docker image both start it from the repository root.

Metrics: the web server runs several worker processes and a Prometheus scrape reaches one of
them, so the request metrics (config/metrics.py) are kept in prometheus_client's multiprocess
mode: each process writes its observations to files under PROMETHEUS_MULTIPROC_DIR, and the
process that answers a scrape sums them all. The directory must start empty — an earlier
server's files would add its counts to this one's — so each server makes a fresh one, or
empties the one the environment names. The workers inherit the variable: they load the
application after they are forked, so prometheus_client sees it before its first metric.

Logs: with LOG_FORMAT=json gunicorn's own lines (start, stop, worker restarts, the access log,
which carries the request id) are JSON objects too, with the fields of the application's
(config/logging.py, which this file does not import: the master process stays free of the
application).
"""

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from dotenv import load_dotenv

MULTIPROCESS_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_directory_made_here: Path | None = None

# As the settings do (config/settings/base.py): a `.env` file fills in what the environment
# leaves unset, LOG_FORMAT included.
load_dotenv(
    os.environ.get("FLYWHEEL_ENV_FILE") or Path(__file__).resolve().parent / ".env",
    override=False,
)


def on_starting(server) -> None:
    global _directory_made_here
    named = os.environ.get(MULTIPROCESS_DIRECTORY_VARIABLE)
    if named:
        directory = Path(named)
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.db"):
            leftover.unlink()
        return
    _directory_made_here = Path(tempfile.mkdtemp(prefix="flywheel-metrics-"))
    os.environ[MULTIPROCESS_DIRECTORY_VARIABLE] = str(_directory_made_here)


def on_exit(server) -> None:
    if _directory_made_here is not None:
        shutil.rmtree(_directory_made_here, ignore_errors=True)


class AccessLineRequestId(logging.Filter):
    """Puts the request id the application answered with (its X-Request-ID header, from
    config/logging.py) on the access line as a field of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args  # gunicorn logs each access line with its atoms as one mapping
        if isinstance(atoms, Mapping):
            request_id = atoms.get("{x-request-id}o")
            if request_id:
                record.request_id = request_id
        return True


if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
    # Merged over gunicorn's default logging configuration, whose root logger is left without
    # handlers: in a worker the root logger is the application's, and gunicorn's lines reaching
    # it would be written twice.
    logconfig_dict = {
        "root": {"level": "INFO", "handlers": []},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["access_line_request_id"],
                "stream": "ext://sys.stdout",
            },
            "error_console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
        },
        "filters": {"access_line_request_id": {"()": AccessLineRequestId}},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "{levelname}{name}{message}",
                "style": "{",
                "rename_fields": {"levelname": "level", "name": "logger"},
                "timestamp": True,
            }
        },
    }
