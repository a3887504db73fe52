"""Curation listens to feedback: each rating or review queues its interaction's curation,
through the outbox, in the transaction that stores the feedback."""

from django.dispatch import receiver

from feedback.signals import feedback_recorded


@receiver(feedback_recorded)
def curate_after_feedback(sender, interaction_id, kind, **kwargs) -> None:
    from retrain.tasks.curation import interaction_curate

    interaction_curate.delay_on_commit(str(interaction_id))
