"""Flywheel: serve with RAG, log everything, collect feedback, curate, retrain, promote."""

from flywheel.celery import app as celery_app

__all__ = ["celery_app"]
