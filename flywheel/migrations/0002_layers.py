"""Adapt a database migrated before the layers were made to point one way.

On such a database the interaction log is still the table `feedback_interaction`, the serving
core's tables still hold foreign-key constraints towards feedback and retrain tables (a
review, a job, a dataset version; the models now keep those as plain ids), and the content
type of interactions still names the feedback app. On a new database there is nothing to do.
"""

from django.db import migrations

UPPER_LAYER_TABLE_PREFIXES = ("feedback_", "retrain_")


def _table_exists(cursor, name: str) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
    return cursor.fetchone()[0]


def adapt_earlier_layout(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        if _table_exists(cursor, "feedback_interaction") and not _table_exists(
            cursor, "flywheel_interaction"
        ):
            cursor.execute("ALTER TABLE feedback_interaction RENAME TO flywheel_interaction")
        cursor.execute(
            """
            SELECT source.relname, constraint_row.conname, target.relname
            FROM pg_constraint constraint_row
            JOIN pg_class source ON source.oid = constraint_row.conrelid
            JOIN pg_class target ON target.oid = constraint_row.confrelid
            WHERE constraint_row.contype = 'f' AND source.relname LIKE 'flywheel\\_%%'
            """
        )
        for table, constraint, target in cursor.fetchall():
            if target.startswith(UPPER_LAYER_TABLE_PREFIXES):
                cursor.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{constraint}"')
    content_types = apps.get_model("contenttypes", "ContentType")
    if not content_types.objects.filter(app_label="flywheel", model="interaction").exists():
        content_types.objects.filter(app_label="feedback", model="interaction").update(
            app_label="flywheel"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("flywheel", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(adapt_earlier_layout, migrations.RunPython.noop)]
