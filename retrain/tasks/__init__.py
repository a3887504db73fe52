"""Celery tasks of the retrain app. A task's queue follows its module's name (queues.py)."""

from retrain.tasks import curation, experiments, indexing, jobs, training

__all__ = ["curation", "experiments", "indexing", "jobs", "training"]
