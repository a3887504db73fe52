"""Writes of the retrain app: curation, dataset versions."""

from retrain.services.curation import (
    CurationSummary,
    curation_policy_get,
    interaction_curate,
    interactions_curate,
    interactions_needing_curation,
)
from retrain.services.datasets import dataset_export_lines, dataset_snapshot

__all__ = [
    "CurationSummary",
    "curation_policy_get",
    "dataset_export_lines",
    "dataset_snapshot",
    "interaction_curate",
    "interactions_curate",
    "interactions_needing_curation",
]
