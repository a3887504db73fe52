"""Shared checks for job parameters: a bad value is an InvalidJobParameters naming it."""

import json
from pathlib import Path

from django.conf import settings

from retrain.jobs.lifecycle import InvalidJobParameters


def take_bool(values: dict, name: str, default: bool) -> bool:
    value = values.pop(name, default)
    if not isinstance(value, bool):
        raise InvalidJobParameters(f"{name} must be true or false")
    return value


def take_int(
    values: dict, name: str, default: int | None, *, minimum: int = 1, maximum: int = 10**9
) -> int | None:
    value = values.pop(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidJobParameters(f"{name} must be an integer from {minimum} to {maximum}")
    return value


def take_golden_set(values: dict) -> str | None:
    """A golden set is a JSONL file (question, answer, optional source) named by its file
    name inside FLYWHEEL_GOLDEN_SETS_DIR, so a parameter can never point elsewhere."""
    name = values.pop("golden_set", None)
    if name is None:
        return None
    if not isinstance(name, str) or "/" in name or name.startswith("."):
        raise InvalidJobParameters("golden_set must be a file name in the golden sets folder")
    if not (Path(settings.FLYWHEEL_GOLDEN_SETS_DIR) / name).is_file():
        raise InvalidJobParameters(f"no golden set named {name!r}")
    return name


def reject_unknown(values: dict) -> None:
    if values:
        raise InvalidJobParameters(f"unknown parameters: {', '.join(sorted(values))}")


def golden_set_load(name: str) -> list[dict]:
    path = Path(settings.FLYWHEEL_GOLDEN_SETS_DIR) / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
