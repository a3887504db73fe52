from celery import shared_task

from flywheel import services


@shared_task
def clear_expired_sessions() -> int:
    return services.expired_sessions_clear()
