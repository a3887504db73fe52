"""Rows stored before validation that a read could not render are repaired.

- An interaction's `created_at` outside 2000-01-01 .. one day after now (a year Python
  cannot hold makes psycopg raise on every read of the row) is clamped into that window.
- A JSON value Python cannot read or render (nesting deeper than its recursion limit,
  numbers beyond float64) is replaced by a renderable one.

Nothing is lost: each row keeps what was replaced, as text, under
`metadata.flywheel_repaired.<field>`.
"""

import json

from django.db import migrations

from flywheel.validation import readable_json_text

EARLIEST = "2000-01-01T00:00:00+00:00"
REPAIR_KEY = "flywheel_repaired"
# (table, JSON columns whose values may need repair); metadata is where originals are kept.
JSON_COLUMNS = [
    ("flywheel_interaction", ["messages", "retrieved", "metadata"]),
    ("flywheel_document", ["metadata"]),
    ("flywheel_chunk", ["metadata"]),
]
# Shorter JSON texts can be neither too deep nor hold too large a number to read.
LONG_TEXT_CHARS = 2000


def _with_repair_note(metadata_sql: str) -> str:
    """SQL for the row's metadata (made an object if it is not one) with `note` (a jsonb
    parameter) merged into its repair record."""
    as_object = (
        f"CASE WHEN jsonb_typeof({metadata_sql}) = 'object' THEN {metadata_sql} "
        f"ELSE jsonb_build_object('value', {metadata_sql}) END"
    )
    previous = (
        f"CASE WHEN jsonb_typeof({metadata_sql} -> '{REPAIR_KEY}') = 'object' "
        f"THEN {metadata_sql} -> '{REPAIR_KEY}' ELSE '{{}}'::jsonb END"
    )
    return f"({as_object}) || jsonb_build_object('{REPAIR_KEY}', ({previous}) || %s::jsonb)"


def created_at_clamp(cursor) -> None:
    cursor.execute(
        "SELECT id, created_at::text FROM flywheel_interaction "
        "WHERE created_at < %s OR created_at > now() + interval '1 day'",
        [EARLIEST],
    )
    for interaction_id, original in cursor.fetchall():
        cursor.execute(
            "UPDATE flywheel_interaction SET "
            "created_at = CASE WHEN created_at < %s THEN %s::timestamptz ELSE now() END, "
            f"metadata = {_with_repair_note('metadata')} WHERE id = %s",
            [EARLIEST, EARLIEST, json.dumps({"created_at": original}), interaction_id],
        )


def json_values_repair(cursor) -> None:
    for table, columns in JSON_COLUMNS:
        for column in columns:
            cursor.execute(
                f"SELECT id, {column}::text FROM {table} WHERE octet_length({column}::text) >= %s",
                [LONG_TEXT_CHARS],
            )
            for row_id, original in cursor.fetchall():
                renderable = readable_json_text(original)
                if renderable == original:
                    continue
                note = json.dumps({column: original})
                if column == "metadata":
                    # The original metadata is itself what is kept.
                    cursor.execute(
                        f"UPDATE {table} SET metadata = "
                        f"jsonb_build_object('{REPAIR_KEY}', %s::jsonb) WHERE id = %s",
                        [note, row_id],
                    )
                else:
                    cursor.execute(
                        f"UPDATE {table} SET {column} = %s::jsonb, "
                        f"metadata = {_with_repair_note('metadata')} WHERE id = %s",
                        [renderable, note, row_id],
                    )


def unrenderable_rows_repair(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        created_at_clamp(cursor)
        json_values_repair(cursor)


class Migration(migrations.Migration):
    dependencies = [("flywheel", "0004_api_key_scopes")]

    operations = [
        migrations.RunPython(unrenderable_rows_repair, migrations.RunPython.noop),
    ]
