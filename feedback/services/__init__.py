"""Writes of the feedback layer, one module per step: `ratings` (rate), `reviews` (review) and
`review_queue` (what a reviewer works next)."""
