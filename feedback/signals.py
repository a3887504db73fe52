"""The hook curation consumes: sent after the transaction that stored a rating or a review
has committed, never before, so a receiver always finds the row."""

import uuid

from django.db import transaction
from django.dispatch import Signal

from flywheel.models import Interaction

# Sent with interaction_id (uuid.UUID) and kind ("rating" or "review").
feedback_recorded = Signal()


def feedback_announce_after_commit(*, interaction_id: uuid.UUID, kind: str) -> None:
    transaction.on_commit(
        lambda: feedback_recorded.send(sender=Interaction, interaction_id=interaction_id, kind=kind)
    )
