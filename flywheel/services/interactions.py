"""The interaction log: every question and answer, served by Flywheel or logged by an app
that brings its own LLM, stored in full."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import IntegrityError, connection, transaction
from django.db.models import NOT_PROVIDED, Field, ForeignKey
from django.utils import timezone
from psycopg.types.json import Jsonb
from pydantic_core import to_json

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
    experiment_id: int | None = None,
    experiment_arm: str = "",
    assignment_unit: str = "",
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
        experiment_id=experiment_id,
        experiment_arm=experiment_arm,
        assignment_unit=assignment_unit,
        created_at=timezone.now(),
    )


@dataclass(frozen=True)
class LoggedInteraction:
    id: uuid.UUID
    idempotency_key: str | None
    created: bool


# A batch is copied into this temporary table (COPY is PostgreSQL's fastest way in), then
# moved into the interaction table by one INSERT … SELECT whose ON CONFLICT leaves an
# interaction already stored under an idempotency key as it is. One per connection, emptied
# by the statement that moves its rows, and at every commit.
STAGING_TABLE = "interaction_staging"
# What a logged interaction's fields fill, in the order they are copied. The project and the
# source are the batch's; every other column gets its model default, as the ORM gives it.
STAGED_FIELDS = (
    "id",
    "idempotency_key",
    "request_hash",
    "session_id",
    "end_user_id",
    "messages",
    "query_text",
    "retrieved",
    "response",
    "model_name",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "metadata",
    "created_at",
)


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
    rows = _staged_rows(interactions, now=timezone.now())
    with transaction.atomic(), connection.cursor() as cursor:
        if not _any_key_stored(cursor, project=project, rows=rows):
            try:
                with transaction.atomic():
                    _copy_into_interactions(cursor, project=project, rows=rows)
            except IntegrityError:
                # A concurrent batch stored one of the keys since: the staging path below
                # sorts out which interactions are new.
                pass
            else:
                return [
                    LoggedInteraction(id=row[0], idempotency_key=row[1], created=True)
                    for row in rows
                ]
        cursor.execute(_staging_table_sql())
        with cursor.copy(
            f"COPY {STAGING_TABLE} ({', '.join(_staged_columns())}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(
                [COPY_TYPE_BY_FIELD[field.get_internal_type()] for field in _staged_fields()]
            )
            for row in rows:
                copy.write_row(row)
        insert_sql, defaults = _insert_from_staging_sql()
        # Concurrent batches with the same key: the unique constraint decides (a second
        # insert waits for the first to commit or roll back), and the loser reads the
        # winner's id below.
        cursor.execute(insert_sql, [project.pk, Interaction.Source.LOG, *defaults])
        if cursor.rowcount == len(rows):
            return [
                LoggedInteraction(id=row[0], idempotency_key=row[1], created=True) for row in rows
            ]
        stored = _stored_by_key(project, rows)
        results = []
        for index, (interaction_id, key, request_hash, *_) in enumerate(rows):
            stored_id, stored_hash = stored[key] if key is not None else (interaction_id, "")
            # An interaction stored before bodies were hashed is taken to be the same one.
            if stored_id != interaction_id and stored_hash and stored_hash != request_hash:
                raise IdempotencyConflict(key, index=index)
            results.append(
                LoggedInteraction(
                    id=stored_id, idempotency_key=key, created=stored_id == interaction_id
                )
            )
        return results


def _fingerprint(item: dict) -> str:
    """request_fingerprint of the interaction's fields but its idempotency key."""
    return request_fingerprint(
        {name: value for name, value in item.items() if name != "idempotency_key"}
    )


def _staged_rows(interactions: list[dict], *, now: datetime) -> list[tuple]:
    """The staging table's rows, in STAGED_FIELDS' order."""
    rows = []
    for item in interactions:
        key = item.get("idempotency_key")
        messages = item["messages"]
        created_at: datetime = item.get("created_at") or now
        rows.append(
            (
                uuid.uuid4(),
                key,
                _fingerprint(item) if key else "",
                item.get("session_id") or "",
                item.get("end_user_id") or "",
                Jsonb(messages, dumps=to_json),
                last_user_message(messages),
                Jsonb(item.get("retrieved") or [], dumps=to_json),
                item["response"],
                item.get("model") or "",
                item.get("latency_ms"),
                item.get("prompt_tokens"),
                item.get("completion_tokens"),
                Jsonb(item.get("metadata") or {}, dumps=to_json),
                # A time without an offset is UTC, as the API reads one.
                created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC),
            )
        )
    return rows


def _any_key_stored(cursor, *, project: Project, rows: list[tuple]) -> bool:
    keys = [row[1] for row in rows if row[1] is not None]
    if not keys:
        return False
    cursor.execute(
        f"SELECT 1 FROM {Interaction._meta.db_table} "
        "WHERE project_id = %s AND idempotency_key = ANY(%s) LIMIT 1",
        [project.pk, keys],
    )
    return cursor.fetchone() is not None


def _copy_into_interactions(cursor, *, project: Project, rows: list[tuple]) -> None:
    """COPY the rows straight into the interaction table: when none of the batch's keys is
    stored, the usual case, this skips the staging table (measured: a sixth of a batch's
    time). The unique constraint still guards the keys: a concurrent batch that stores one
    first makes this COPY fail with IntegrityError."""
    default_fields, defaults = _unstaged_defaults()
    by_name = {field.name: field for field in Interaction._meta.concrete_fields}
    fields = [by_name["project"], by_name["source"], *_staged_fields(), *default_fields]
    head = (project.pk, Interaction.Source.LOG)
    # Django wraps execute()'s errors in its own, not those of psycopg's copy().
    with (
        connection.wrap_database_errors,
        cursor.copy(
            f"COPY {Interaction._meta.db_table} ({', '.join(field.column for field in fields)}) "
            "FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types([_copy_type(field) for field in fields])
        for row in rows:
            copy.write_row((*head, *row, *defaults))


def _copy_type(field: Field) -> str:
    if isinstance(field, ForeignKey):
        return COPY_TYPE_BY_FIELD[field.target_field.get_internal_type()]
    return COPY_TYPE_BY_FIELD[field.get_internal_type()]


# Binary COPY (measured: a sixth less time than text to stage a batch): each staged
# column's type as psycopg names it, by the kind of model field it holds.
COPY_TYPE_BY_FIELD = {
    "BigAutoField": "int8",
    "AutoField": "int4",
    "UUIDField": "uuid",
    "CharField": "text",
    "TextField": "text",
    "JSONField": "jsonb",
    "PositiveIntegerField": "int4",
    "DateTimeField": "timestamptz",
}


def _staged_fields() -> list[Field]:
    by_name = {field.name: field for field in Interaction._meta.concrete_fields}
    return [by_name[name] for name in STAGED_FIELDS]


def _staged_columns() -> list[str]:
    return [field.column for field in _staged_fields()]


def _staging_table_sql() -> str:
    columns = ", ".join(f"{field.column} {field.db_type(connection)}" for field in _staged_fields())
    return f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING_TABLE} ({columns}) ON COMMIT DELETE ROWS"


def _unstaged_defaults() -> tuple[list[Field], list]:
    """The columns a logged interaction leaves to its model default, where that default is
    not the column's own (NULL, or a database default), and their values."""
    staged = {"project_id", "source", *_staged_columns()}
    fields, defaults = [], []
    for field in Interaction._meta.concrete_fields:
        if field.generated or field.column in staged or field.db_default is not NOT_PROVIDED:
            continue
        default = field.get_db_prep_save(field.get_default(), connection)
        if default is None:
            continue  # NULL, as the column gives
        fields.append(field)
        defaults.append(default)
    return fields, defaults


def _insert_from_staging_sql() -> tuple[str, list]:
    """The INSERT … SELECT that moves the staged rows (parameters: the project's id, the
    source, then the returned defaults)."""
    staged = _staged_columns()
    default_fields, defaults = _unstaged_defaults()
    columns = ["project_id", "source", *staged, *(field.column for field in default_fields)]
    values = [
        "%s",
        "%s",
        *staged,
        *(f"%s::{field.db_type(connection)}" for field in default_fields),
    ]
    table = Interaction._meta.db_table
    sql = (
        f"WITH staged AS (DELETE FROM {STAGING_TABLE} RETURNING *) "
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"SELECT {', '.join(values)} FROM staged "
        "ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL "
        "DO NOTHING"
    )
    return sql, defaults


def _stored_by_key(project: Project, rows: list[tuple]) -> dict[str, tuple[uuid.UUID, str]]:
    """(id, request hash) of the stored interaction for each key of the batch: a statement of
    its own, so that it sees what a concurrent batch committed while this one waited."""
    keys = [row[1] for row in rows if row[1] is not None]
    stored = Interaction.objects.filter(project=project, idempotency_key__in=keys)
    return {
        str(key): (interaction_id, request_hash)
        for key, interaction_id, request_hash in stored.values_list(
            "idempotency_key", "id", "request_hash"
        )
    }


def _refuse_repeated_keys(interactions: list[dict]) -> None:
    seen: set[str] = set()
    for index, item in enumerate(interactions):
        key = item.get("idempotency_key")
        if key is None:
            continue
        if key in seen:
            raise IdempotencyKeyRepeated(key, index=index)
        seen.add(key)
