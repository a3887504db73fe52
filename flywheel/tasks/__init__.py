"""Celery tasks of the serving core. A task's queue follows its module's name (queues.py)."""

from flywheel.tasks import housekeeping, indexing, outbox, shadow

__all__ = ["housekeeping", "indexing", "outbox", "shadow"]
