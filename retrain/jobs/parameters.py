"""Shared checks for job parameters: a bad value is an InvalidJobParameters naming it."""

import json
from pathlib import Path

from django.conf import settings

from flywheel.validation import InvalidValue, check_json, text_problem
from retrain.jobs.lifecycle import InvalidJobParameters


def check_parameters(values: dict) -> dict:
    """The parameters, if every name and value in them could be stored: the same checks as
    a JSON request body gets (no NUL, no lone surrogate, finite numbers), for parameters
    that come from elsewhere (a command line, a schedule)."""
    try:
        return check_json(values)
    except InvalidValue as error:
        raise InvalidJobParameters(str(error) if error.path else f"a name {error}") from error


def take_text(values: dict, name: str, default: str, *, max_length: int = 200) -> str:
    value = values.pop(name, default)
    if not isinstance(value, str) or len(value) > max_length:
        raise InvalidJobParameters(f"{name} must be text of at most {max_length} characters")
    problem = text_problem(value)
    if problem:
        raise InvalidJobParameters(f"{name} {problem}")
    return value


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
    if values.get("golden_set") is None:
        values.pop("golden_set", None)
        return None
    name = take_text(values, "golden_set", "", max_length=255)
    if "/" in name or name.startswith("."):
        raise InvalidJobParameters("golden_set must be a file name in the golden sets folder")
    if not (Path(settings.FLYWHEEL_GOLDEN_SETS_DIR) / name).is_file():
        raise InvalidJobParameters(f"no golden set named {name!r}")
    return name


def reject_unknown(values: dict) -> None:
    if values:
        # Shown as Python writes them, so that a name holding a control character reads.
        names = ", ".join(name if name.isprintable() else ascii(name) for name in sorted(values))
        raise InvalidJobParameters(f"unknown parameters: {names}")


def golden_set_load(name: str) -> list[dict]:
    path = Path(settings.FLYWHEEL_GOLDEN_SETS_DIR) / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
