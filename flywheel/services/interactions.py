"""The interaction log: every question and answer, served by Flywheel or logged by an app
that brings its own LLM, stored in full."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from flywheel.messages import last_user_message
from flywheel.models import IndexVersion, Interaction, ModelVersion, Project, VerifiedAnswer
from flywheel.services.idempotency import (
    IdempotencyConflict,
    IdempotencyKeyRepeated,
    request_fingerprint,
)


def interaction_record(
    *,
    project: Project,
    source: str,
    messages: list[dict],
    query_text: str,
    response: str,
    interaction_id: uuid.UUID | None = None,
    query_embedding=None,
    retrieved: list[dict] | None = None,
    answered_from: str = "",
    verified_answer: VerifiedAnswer | None = None,
    model_version: ModelVersion | None = None,
    model_name: str = "",
    index_version: IndexVersion | None = None,
    latency_ms: int | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    session_id: str = "",
    end_user_id: str = "",
    metadata: dict | None = None,
) -> Interaction:
    return Interaction.objects.create(
        id=interaction_id or uuid.uuid4(),
        project=project,
        source=source,
        messages=messages,
        query_text=query_text,
        query_embedding=query_embedding,
        retrieved=retrieved or [],
        response=response,
        answered_from=answered_from,
        verified_answer=verified_answer,
        model_version=model_version,
        model_name=model_name,
        index_version=index_version,
        latency_ms=latency_ms,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        session_id=session_id,
        end_user_id=end_user_id,
        metadata=metadata or {},
        created_at=timezone.now(),
    )


@dataclass(frozen=True)
class LoggedInteraction:
    id: uuid.UUID
    idempotency_key: str | None
    created: bool


def interactions_log_batch(
    *, project: Project, interactions: list[dict]
) -> list[LoggedInteraction]:
    """Store interactions an app logged itself, all or none.

    An interaction whose idempotency key is already stored with the same fields is not stored
    again: its existing id is returned with `created` false. Raises IdempotencyConflict when
    a stored interaction has the key with other fields, and IdempotencyKeyRepeated when the
    batch names a key twice; then nothing of the batch is stored.
    """
    _refuse_repeated_keys(interactions)
    now = timezone.now()
    rows: list[Interaction] = []
    for item in interactions:
        created_at: datetime | None = item.get("created_at")
        key = item.get("idempotency_key")
        rows.append(
            Interaction(
                id=uuid.uuid4(),
                project=project,
                source=Interaction.Source.LOG,
                idempotency_key=key,
                request_hash=(
                    request_fingerprint({k: v for k, v in item.items() if k != "idempotency_key"})
                    if key
                    else ""
                ),
                session_id=item.get("session_id") or "",
                end_user_id=item.get("end_user_id") or "",
                messages=item["messages"],
                query_text=last_user_message(item["messages"]),
                retrieved=item.get("retrieved") or [],
                response=item["response"],
                model_name=item.get("model") or "",
                latency_ms=item.get("latency_ms"),
                prompt_tokens=item.get("prompt_tokens"),
                completion_tokens=item.get("completion_tokens"),
                metadata=item.get("metadata") or {},
                created_at=created_at or now,
            )
        )
    with transaction.atomic():
        # Concurrent batches with the same key: the unique constraint decides, and the
        # loser reads the winner's id below.
        Interaction.objects.bulk_create(rows, ignore_conflicts=True)
        keys = {row.idempotency_key for row in rows if row.idempotency_key}
        stored = {
            key: (interaction_id, request_hash)
            for key, interaction_id, request_hash in Interaction.objects.filter(
                project=project, idempotency_key__in=keys
            ).values_list("idempotency_key", "id", "request_hash")
        }
        results = []
        for index, row in enumerate(rows):
            key = row.idempotency_key
            if key is None:
                results.append(LoggedInteraction(id=row.id, idempotency_key=None, created=True))
                continue
            stored_id, stored_hash = stored[key]
            # An interaction stored before bodies were hashed is taken to be the same one.
            if stored_id != row.id and stored_hash and stored_hash != row.request_hash:
                raise IdempotencyConflict(key, index=index)
            results.append(
                LoggedInteraction(id=stored_id, idempotency_key=key, created=stored_id == row.id)
            )
    return results


def _refuse_repeated_keys(interactions: list[dict]) -> None:
    seen: set[str] = set()
    for index, item in enumerate(interactions):
        key = item.get("idempotency_key")
        if key is None:
            continue
        if key in seen:
            raise IdempotencyKeyRepeated(key, index=index)
        seen.add(key)
