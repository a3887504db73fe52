from celery import shared_task

from flywheel.services import outbox


@shared_task
def outbox_relay() -> dict[str, int]:
    """Beat's relay of the outbox, beside each worker's own loop: send what is pending and
    forget what was sent a day ago."""
    return {"published": outbox.outbox_relay(), "pruned": outbox.outbox_prune()}
