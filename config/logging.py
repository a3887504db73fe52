"""What every log line carries besides its message: the request it was written for, and inside
Celery the task and the job.

`LOG_FORMAT=json` (config/settings/base.py) writes one JSON object per line — `timestamp`,
`level`, `logger`, `message`, and `request_id`, `task_id` and `job_id` where they apply — for a
log collector to index. The ids live in context variables: `RequestIdMiddleware` sets the
request's, the Celery signals in config/celery.py set the task's and the job's, and
`LogContextFilter` copies them onto every record the console handler writes, whichever logger
wrote it.
"""

import inspect
import logging
import re
import uuid
from contextvars import ContextVar

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponseBase
from pythonjsonlogger.json import JsonFormatter as _PythonJsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is kept when it looks like one (a UUID, a proxy's or a tracer's id); anything
# else — too long, or with spaces or quotes that would garble log lines — is replaced.
ACCEPTED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

request_id_context: ContextVar[str | None] = ContextVar("request_id", default=None)
task_id_context: ContextVar[str | None] = ContextVar("task_id", default=None)
job_id_context: ContextVar[int | None] = ContextVar("job_id", default=None)

LOG_CONTEXT: dict[str, ContextVar] = {
    "request_id": request_id_context,
    "task_id": task_id_context,
    "job_id": job_id_context,
}


def request_id_for(incoming: str | None) -> str:
    """The caller's `X-Request-ID` when it is acceptable, else a new one."""
    if incoming and ACCEPTED_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Gives each request an id — the caller's `X-Request-ID` or a new one — that its log lines
    carry and its response echoes in `X-Request-ID`.

    The id stays set until the response is closed, not only while the view runs: a streamed
    answer logs as it finishes, after the middleware has returned, and Django logs a 4xx or
    5xx response (the `django.request` logger) outside the middleware chain."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = request_id_for(request.headers.get(REQUEST_ID_HEADER))
        request_id_context.set(request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


def _request_id_forget(**kwargs) -> None:
    request_id_context.set(None)


# Sent when the server closes the response, after the last streamed byte.
request_finished.connect(_request_id_forget, dispatch_uid="config.logging.request_id_forget")


def task_log_context_bind(*, task_id: str, task, args, kwargs) -> None:
    """Inside a Celery task (the task_prerun signal): its id, and the id of the job it runs
    (a job's task takes the Job row's id as its `job_id` argument)."""
    task_id_context.set(task_id)
    try:
        job_id = inspect.signature(task.run).bind_partial(*args, **kwargs).arguments.get("job_id")
    except (TypeError, ValueError):  # arguments the task would refuse: it fails on its own
        job_id = None
    job_id_context.set(job_id if isinstance(job_id, int) else None)


def task_log_context_clear() -> None:
    """After a Celery task (the task_postrun signal): a worker's own lines carry no task."""
    task_id_context.set(None)
    job_id_context.set(None)


class LogContextFilter(logging.Filter):
    """Adds the request, task and job ids that apply to each record (as attributes the JSON
    formatter writes out); it filters nothing out."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, variable in LOG_CONTEXT.items():
            value = variable.get()
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(_PythonJsonFormatter):
    """One JSON object per line: timestamp (ISO 8601, UTC), level, logger, message, the ids of
    LogContextFilter, the exception's traceback as `exc_info`, and any `extra` a call passed."""

    def __init__(self) -> None:
        super().__init__(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
        )
