"""The one Celery app. Configuration comes from Django settings (the CELERY_ names)."""

import os

from celery import Celery
from celery.signals import worker_init, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")

app = Celery("flywheel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
@worker_process_init.connect
def _limit_torch_threads(**kwargs) -> None:
    """Workers train and embed outside the model loader too; cap their torch threads."""
    from flywheel.ml.loading import torch_threads_limit

    torch_threads_limit()
