"""The hook curation consumes: sent after the transaction that stored a rating or a review
has committed, never before, so a receiver always finds the row."""

from django.dispatch import Signal

# Sent with interaction_id (uuid.UUID) and kind ("rating" or "review").
feedback_recorded = Signal()
