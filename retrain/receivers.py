"""Curation listens to feedback: each committed rating or review re-curates its interaction."""

from django.dispatch import receiver

from feedback.signals import feedback_recorded


@receiver(feedback_recorded)
def curate_after_feedback(sender, interaction_id, kind, **kwargs) -> None:
    from retrain.tasks.curation import interaction_curate

    # The signal is sent after commit; should Redis be down, the sweep catches up later.
    try:
        interaction_curate.delay(str(interaction_id))
    except Exception:
        import logging

        logging.getLogger(__name__).warning(
            "Could not enqueue curation of %s; the sweep will", interaction_id, exc_info=True
        )
