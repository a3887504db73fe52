"""The Django project: settings, URLs, the API assembly, the Celery app, queues, periodic
tasks and the `make run` process runner. Wiring only: the loop itself lives in the apps."""

from config.celery import app as celery_app

__all__ = ["celery_app"]
