"""Interactions, ratings, reviews and the reviewer dashboard."""
