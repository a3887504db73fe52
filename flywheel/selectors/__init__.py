"""Reads of the serving core."""
