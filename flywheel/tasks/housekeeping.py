from celery import shared_task

from flywheel.services import housekeeping


@shared_task
def clear_expired_sessions() -> int:
    return housekeeping.expired_sessions_clear()
