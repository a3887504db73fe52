"""Curation: rated and reviewed interactions become instruction examples.

One module per step: `policy` (what counts), `examples` (the messages, PII-scrubbed by `pii`),
`dedupe` (near-duplicate clusters), `split` (train or eval per cluster), and `pipeline`, which
runs them over a batch of interactions.
"""
