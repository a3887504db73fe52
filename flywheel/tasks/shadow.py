import uuid

from celery import shared_task

from flywheel.services import shadow_answers


@shared_task
def shadow_answer_generate(interaction_id: str) -> int | None:
    """The candidate's answer to a control interaction, in the background (shadow mode)."""
    shadow = shadow_answers.shadow_answer_generate(interaction_id=uuid.UUID(interaction_id))
    return shadow.pk if shadow is not None else None
