"""Idempotency keys, as Stripe has them: a request sent again under the same key gets the
result of the first and stores nothing new; a different request under a key already used is
refused (409), since it cannot be what the first one meant.

Two shapes use it: interactions carry a key each (the hash of each one's fields is stored on
the interaction), and endpoints that take an `Idempotency-Key` header for the whole request
keep an IdempotencyRecord.
"""

import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.db import transaction

from flywheel.models import IdempotencyRecord, Project


class IdempotencyConflict(Exception):
    """The key was already used for a different request."""

    code = "idempotency_conflict"

    def __init__(self, key: str, *, index: int | None = None):
        super().__init__(
            f"The idempotency key {key!r} was already used with a different request; "
            "send the same request to get its result, or use a new key."
        )
        self.key = key
        # Where the key is in a batch, when the key belongs to one item of it.
        self.index = index


class IdempotencyKeyRepeated(Exception):
    """One request names the same key twice: which of the two would it mean?"""

    code = "duplicate_idempotency_key"

    def __init__(self, key: str, *, index: int):
        super().__init__(f"The idempotency key {key!r} appears more than once in this request.")
        self.key = key
        self.index = index


# One encoder for every fingerprint: json.dumps builds a new encoder for each call when given
# options, a third of the time of fingerprinting a batch of interactions.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def request_fingerprint(content: Any) -> str:
    """A hash of a request's content that ignores key order and formatting: the same fields
    with the same values give the same fingerprint."""
    return hashlib.sha256(_CANONICAL_JSON.encode(content).encode()).hexdigest()


def idempotent_request_run(
    *,
    project: Project,
    scope: str,
    key: str,
    request_hash: str,
    store: Callable[[], Any],
) -> tuple[Any, bool]:
    """Run `store` (which returns what it stored, as JSON) once per key: `(result, True)` the
    first time, `(the first result, False)` for a retry of the same request. Raises
    IdempotencyConflict for a different request under the key. `store` runs in this
    function's transaction, so its rows and the key's record commit together.

    Two requests with the same key at once take turns: the second waits on the first's
    insert of the record, then reads what the first stored.
    """
    with transaction.atomic():
        IdempotencyRecord.objects.bulk_create(
            [IdempotencyRecord(project=project, scope=scope, key=key, request_hash=request_hash)],
            ignore_conflicts=True,
        )
        record = IdempotencyRecord.objects.select_for_update().get(
            project=project, scope=scope, key=key
        )
        if record.request_hash != request_hash:
            raise IdempotencyConflict(key)
        if record.result is not None:
            return record.result, False
        # A record without a result is this transaction's own insert: any other would have
        # been committed with its result.
        record.result = store()
        record.save(update_fields=["result"])
        return record.result, True
