"""Canary experiments: a candidate serves a share of the traffic until live ratings decide."""
