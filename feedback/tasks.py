from celery import shared_task

from feedback.services.rollups import rollups_refresh


@shared_task
def rollups_refresh_due() -> int:
    """Bring the dashboards' rollups up to date; returns the project-days recomputed."""
    return rollups_refresh().buckets
