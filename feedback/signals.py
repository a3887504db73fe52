"""The hook curation consumes: sent inside the transaction that stores a rating or a review,
so that what a receiver writes — its follow-up work, as an outbox row — commits with the
feedback or not at all. Receivers must not do slow work here: they queue it."""

import uuid

from django.dispatch import Signal

from flywheel.models import Interaction

# Sent with interaction_id (uuid.UUID) and kind ("rating" or "review").
feedback_recorded = Signal()


def feedback_announce(*, interaction_id: uuid.UUID, kind: str) -> None:
    """Call inside the transaction that stores the feedback."""
    feedback_recorded.send(sender=Interaction, interaction_id=interaction_id, kind=kind)
