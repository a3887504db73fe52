"""Curation policies, datasets, jobs, training, evaluation and promotion."""
