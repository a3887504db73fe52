"""The checks every write passes, whichever door it comes in by (the JSON API, dashboard
forms, job parameters), and the helpers that let reads render whatever a row holds.

PostgreSQL refuses NUL characters in text and jsonb, the UTF-8 encoder refuses lone
surrogates, jsonb refuses NaN and the infinities, and an int4 column refuses anything beyond
2 147 483 647: each of these, unchecked, is a 500 after the request was accepted. Checking
here turns them into a 400 that names the field, before anything is stored or generated.
"""

import json
import math
import re
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import psycopg.adapt
from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator
from django.utils import timezone

# PositiveIntegerField and IntegerField are int4; ids are int8.
INT4_MAX = 2_147_483_647
INT8_MAX = 9_223_372_036_854_775_807
# A metadata object (interaction, document, chat request, job parameters) stays small and
# shallow enough to index, render and export without surprises.
METADATA_MAX_DEPTH = 10
METADATA_MAX_BYTES = 64 * 1024
# Any JSON body: deeper than this is refused before a recursive reader can fail on it.
JSON_MAX_DEPTH = 32
# A timestamp a client sends (an interaction's `created_at`) lies in this window.
TIMESTAMP_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
TIMESTAMP_FUTURE_TOLERANCE = timedelta(days=1)
# The largest magnitude a JSON number may have: what a float64 (and every JSON reader that
# uses one) can hold. json.loads reads 1e400 as inf.
FLOAT64_MAX = sys.float_info.max
# More digits than this and an integer cannot fit in a float64; Python would refuse to parse
# one of over 4300 digits with a ValueError rather than a JSON error.
_FLOAT64_MAX_DIGITS = len(str(int(FLOAT64_MAX)))

_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


class InvalidValue(ValueError):
    """A value refused at `path` (keys and list indexes from the top of the checked value)."""

    def __init__(self, path: tuple[str | int, ...], message: str):
        self.path = path
        self.message = message
        super().__init__(f"{self.param}: {message}" if path else message)

    @property
    def param(self) -> str:
        return ".".join(str(part) for part in self.path)


def text_problem(text: str) -> str | None:
    """Why PostgreSQL or its UTF-8 encoding would refuse this text; None when it is fine."""
    found = _UNSTORABLE_CHARACTER.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain NUL characters (\\u0000)"
    return "must not contain lone surrogates (\\ud800-\\udfff)"


def number_problem(number: int | float) -> str | None:
    if isinstance(number, bool):
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return "must be a finite number (not NaN, Infinity or beyond float64's range)"
    if abs(number) > FLOAT64_MAX:
        return "must be a number within float64's range"
    return None


def json_problems(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[InvalidValue]:
    """Every string (keys included) and number in a parsed JSON value that cannot be stored,
    and nesting beyond JSON_MAX_DEPTH. Iterative, so hostile nesting cannot exhaust the
    stack."""
    pending: list[tuple[Any, tuple[str | int, ...]]] = [(value, path)]
    while pending:
        item, where = pending.pop()
        if len(where) - len(path) > JSON_MAX_DEPTH:
            yield InvalidValue(where, f"is nested more than {JSON_MAX_DEPTH} levels deep")
            continue
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                yield InvalidValue(where, problem)
        elif isinstance(item, int | float):
            problem = number_problem(item)
            if problem:
                yield InvalidValue(where, problem)
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                key_problem = text_problem(key) if isinstance(key, str) else None
                if key_problem:
                    yield InvalidValue(where, f"a key {key_problem}")
                    continue
                pending.append((child, (*where, key)))
        elif isinstance(item, list | tuple):
            pending.extend(
                (child, (*where, index)) for index, child in reversed(list(enumerate(item)))
            )


def check_json(value: Any, path: tuple[str | int, ...] = ()) -> Any:
    """The value, or InvalidValue for the first part of it that cannot be stored."""
    for problem in json_problems(value, path):
        raise problem
    return value


def _parse_integer(digits: str) -> int | float:
    # Beyond float64 anyway: read as inf, which the check then names, instead of letting
    # int() fail on very long numbers with an error that is not about JSON.
    if len(digits.lstrip("-")) > _FLOAT64_MAX_DIGITS:
        return math.inf
    return int(digits)


def json_loads_checked(body: bytes | str) -> Any:
    """Parse a JSON request body and check every value in it (InvalidValue names the first
    refused one). NaN and the infinities are read, to be refused by path, not guessed at."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as error:
        raise InvalidValue((), "the body is not valid UTF-8") from error
    try:
        value = json.loads(text, parse_int=_parse_integer)
    except RecursionError as error:
        raise InvalidValue((), f"is nested more than {JSON_MAX_DEPTH} levels deep") from error
    return check_json(value)


def json_depth(value: Any) -> int:
    """Levels of objects and arrays: 0 for a scalar, 1 for {"a": 1}."""
    if isinstance(value, dict) and not any(
        isinstance(child, dict | list | tuple) for child in value.values()
    ):
        return 1  # the usual metadata, answered without the walk's allocations
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list | tuple):
            pending.extend((child, depth + 1) for child in item)
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
    return deepest


# Metadata's size as stored; one encoder for every call, as json.dumps with options builds a
# new one each time (a batch of 1,000 interactions checks 1,000 metadata objects).
_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def check_metadata(value: dict) -> dict:
    """A metadata object: storable, at most METADATA_MAX_DEPTH levels, METADATA_MAX_BYTES as
    JSON."""
    check_json(value)
    if json_depth(value) > METADATA_MAX_DEPTH:
        raise InvalidValue((), f"must be at most {METADATA_MAX_DEPTH} levels deep")
    size = len(_COMPACT_JSON.encode(value).encode())
    if size > METADATA_MAX_BYTES:
        raise InvalidValue((), f"must be at most {METADATA_MAX_BYTES} bytes as JSON")
    return value


def check_timestamp(value: datetime) -> datetime:
    """From 2000-01-01 to one day ahead of now; a time without an offset is UTC."""
    aware = value if timezone.is_aware(value) else value.replace(tzinfo=UTC)
    latest = timezone.now() + TIMESTAMP_FUTURE_TOLERANCE
    if not TIMESTAMP_EARLIEST <= aware <= latest:
        raise InvalidValue(
            (), "must be from 2000-01-01T00:00:00Z to one day after the current time"
        )
    return aware


class CheckedFormMixin:
    """For Django forms: every text value is checked like a JSON string, and an integer field
    without a maximum gets the largest id the database holds, so that no form value reaches
    PostgreSQL only to be refused there."""

    fields: dict[str, forms.Field]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            if isinstance(field, forms.IntegerField) and field.max_value is None:
                field.max_value = INT8_MAX
                field.validators.append(MaxValueValidator(INT8_MAX))
                field.widget.attrs.setdefault("max", INT8_MAX)
            if isinstance(field, forms.IntegerField) and field.min_value is None:
                field.min_value = -INT8_MAX
                field.validators.append(MinValueValidator(-INT8_MAX))

    def clean(self):
        cleaned = super().clean()  # type: ignore[misc]
        for name, value in list(cleaned.items()):
            texts = [value] if isinstance(value, str) else []
            if isinstance(value, list | tuple):
                texts = [item for item in value if isinstance(item, str)]
            for text in texts:
                problem = text_problem(text)
                if problem:
                    self.add_error(name, f"This value {problem}.")  # type: ignore[attr-defined]
                    break
        return cleaned


# ---------------------------------------------------------------------------------------------
# Rendering what is stored: rows written before these checks existed may hold values that the
# JSON encoder or a recursive renderer cannot take. Reads pass them through here.

RENDER_MAX_DEPTH = 64


def renderable_json(value: Any, *, max_depth: int = RENDER_MAX_DEPTH) -> Any:
    """A copy that any JSON encoder and template can render: non-finite numbers become their
    names as strings, text loses what cannot be encoded, and anything nested deeper than
    `max_depth` becomes its JSON text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > FLOAT64_MAX:
        return str(value)
    if isinstance(value, str):
        return _UNSTORABLE_CHARACTER.sub("\ufffd", value)
    if isinstance(value, dict | list):
        if max_depth <= 0:
            return _json_text_of_deep_value(value)
        if isinstance(value, dict):
            return {
                renderable_json(str(key), max_depth=0): renderable_json(
                    child, max_depth=max_depth - 1
                )
                for key, child in value.items()
            }
        return [renderable_json(child, max_depth=max_depth - 1) for child in value]
    return value


def _json_text_of_deep_value(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (RecursionError, ValueError):
        return "(too deeply nested to show)"


# A timestamptz beyond Python's years 1-9999 ('infinity', 10000-01-01, a date BC) makes
# psycopg raise while loading the row, so no page listing it could render. Such a value reads
# as the nearest day Python can show in any time zone; migration 0005 moves it into range and
# keeps the original in the row's metadata. Dates and naive timestamps (what the admin's date
# hierarchy truncates to) get the same.
READABLE_RANGE_BY_TYPE = {
    "timestamptz": (datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC)),
    "timestamp": (datetime(1, 1, 2), datetime(9999, 12, 30)),
    "date": (date(1, 1, 2), date(9999, 12, 30)),
}


class _WrappingLoader(psycopg.adapt.Loader):
    """Loads through another loader class (psycopg's C loaders cannot be subclassed)."""

    wrapped: type

    def __init__(self, oid, context=None):
        super().__init__(oid, context)
        self.inner = self.wrapped(oid, context)


def _clamping(loader_class: type, earliest: date, latest: date) -> type:
    class ClampingLoader(_WrappingLoader):
        wrapped = loader_class
        # Django compares it to the connection's to decide whether a cursor needs its own.
        timezone = getattr(loader_class, "timezone", None)

        def load(self, data):
            try:
                return self.inner.load(data)
            except psycopg.DataError:
                text = bytes(data).decode(errors="replace")
                return earliest if text.startswith("-") or text.endswith("BC") else latest

    return ClampingLoader


# jsonb holds what Python's json cannot always read back: nesting deeper than its recursion
# limit, integers of more than 4300 digits. Django's JSONField would raise on such a row; a
# short text cannot hold either, so only long ones are looked at.
_JSON_CHECKED_FROM_CHARS = 2000


def readable_json_text(text: str) -> str:
    if len(text) < _JSON_CHECKED_FROM_CHARS:
        return text
    long_integers = []

    def integer_or_digits(digits: str) -> int | str:
        # An integer beyond float64 is kept as its digits (json.loads refuses very long ones).
        if len(digits.lstrip("-")) < _FLOAT64_MAX_DIGITS:
            return int(digits)
        long_integers.append(digits)
        return digits

    try:
        value = json.loads(text, parse_int=integer_or_digits)
    except RecursionError:
        return json.dumps({"unreadable_json": text[:_JSON_CHECKED_FROM_CHARS]})
    readable = not long_integers and json_depth(value) <= RENDER_MAX_DEPTH
    if readable and not any(json_problems(value)):
        return text
    return json.dumps(renderable_json(value), ensure_ascii=False)


def _renderable_json_loader(loader_class: type) -> type:
    class RenderableJsonLoader(_WrappingLoader):
        wrapped = loader_class

        def load(self, data):
            return readable_json_text(self.inner.load(data))

    return RenderableJsonLoader


def read_stored_values_renderably(sender, connection, **kwargs) -> None:
    """A `connection_created` receiver: wraps the connection's loaders of timestamps and
    dates (Django's timestamptz one applies the connection's time zone) in ones that clamp
    instead of raising, and its jsonb loader (text, for JSONField to decode) in one that only
    hands on JSON Python can read and render."""
    if connection.vendor != "postgresql":
        return
    adapters = connection.connection.adapters

    def wrap(type_name: str, wrapper) -> None:
        current = adapters.get_loader(adapters.types[type_name].oid, psycopg.pq.Format.TEXT)
        if current is not None and current.__module__ != __name__:
            adapters.register_loader(type_name, wrapper(current))

    for type_name, (earliest, latest) in READABLE_RANGE_BY_TYPE.items():
        wrap(type_name, lambda loader, low=earliest, high=latest: _clamping(loader, low, high))
    wrap("jsonb", _renderable_json_loader)
