"""Daily rollups for the dashboards, and the triggers that mark the days they must catch up on.

Every statement that inserts, updates or deletes interactions, ratings or reviews records the
(project, UTC day) it touched in feedback_rollupchange, in its own transaction: whoever writes
(the ORM, a COPY-speed ingestion path, the admin, a cascade, a test factory), the rollups
learn of it, and a change commits with its mark or not at all. The triggers run once per
statement over its transition table, not once per row, so that a bulk insert pays one small
set-based INSERT. The days already logged are marked too, so that the periodic refresh
builds their rollups after this migration.
"""

import django.db.models.deletion
import django.db.models.functions.datetime
from django.db import migrations, models

MARK_INTERACTIONS = """
CREATE FUNCTION feedback_rollup_mark_interactions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO feedback_rollupchange (project_id, utc_day)
        SELECT DISTINCT project_id, (created_at AT TIME ZONE 'UTC')::date FROM changed_new;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO feedback_rollupchange (project_id, utc_day)
        SELECT DISTINCT project_id, (created_at AT TIME ZONE 'UTC')::date FROM changed_old;
    ELSE
        -- Only what a rollup is keyed or counted by; other columns change nothing.
        INSERT INTO feedback_rollupchange (project_id, utc_day)
        SELECT project_id, (created_at AT TIME ZONE 'UTC')::date FROM (
            SELECT n.project_id AS new_project, n.created_at AS new_created,
                   o.project_id AS old_project, o.created_at AS old_created
            FROM changed_new n JOIN changed_old o ON o.id = n.id
            WHERE (n.project_id, n.created_at, n.model_version_id, n.model_name,
                   n.index_version_id)
                  IS DISTINCT FROM
                  (o.project_id, o.created_at, o.model_version_id, o.model_name,
                   o.index_version_id)
        ) moved
        CROSS JOIN LATERAL (VALUES (new_project, new_created), (old_project, old_created))
            AS side (project_id, created_at)
        GROUP BY 1, 2;
    END IF;
    RETURN NULL;
END
$$;
"""

MARK_FEEDBACK = """
CREATE FUNCTION feedback_rollup_mark_feedback() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO feedback_rollupchange (project_id, utc_day)
        SELECT DISTINCT i.project_id, (i.created_at AT TIME ZONE 'UTC')::date
        FROM flywheel_interaction i WHERE i.id IN (SELECT interaction_id FROM changed_new);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO feedback_rollupchange (project_id, utc_day)
        SELECT DISTINCT i.project_id, (i.created_at AT TIME ZONE 'UTC')::date
        FROM flywheel_interaction i WHERE i.id IN (SELECT interaction_id FROM changed_old);
    END IF;
    RETURN NULL;
END
$$;
"""


def _triggers(table: str, function: str) -> str:
    # One trigger per event: PostgreSQL allows transition tables only on single-event triggers.
    return f"""
CREATE TRIGGER rollup_mark_insert AFTER INSERT ON {table}
    REFERENCING NEW TABLE AS changed_new
    FOR EACH STATEMENT EXECUTE FUNCTION {function}();
CREATE TRIGGER rollup_mark_update AFTER UPDATE ON {table}
    REFERENCING OLD TABLE AS changed_old NEW TABLE AS changed_new
    FOR EACH STATEMENT EXECUTE FUNCTION {function}();
CREATE TRIGGER rollup_mark_delete AFTER DELETE ON {table}
    REFERENCING OLD TABLE AS changed_old
    FOR EACH STATEMENT EXECUTE FUNCTION {function}();
"""


def _drop_triggers(table: str) -> str:
    return "".join(
        f"DROP TRIGGER IF EXISTS rollup_mark_{event} ON {table};"
        for event in ("insert", "update", "delete")
    )


MARKED_TABLES = {
    "flywheel_interaction": "feedback_rollup_mark_interactions",
    "feedback_rating": "feedback_rollup_mark_feedback",
    "feedback_review": "feedback_rollup_mark_feedback",
}

MARK_EVERY_LOGGED_DAY = """
INSERT INTO feedback_rollupchange (project_id, utc_day)
SELECT DISTINCT project_id, (created_at AT TIME ZONE 'UTC')::date FROM flywheel_interaction;
"""


class Migration(migrations.Migration):
    dependencies = [("feedback", "0002_review_revisions"), ("flywheel", "0010_list_filter_indexes")]

    operations: list = [
        migrations.CreateModel(
            name="DailyRollup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("model_name", models.CharField(blank=True, max_length=300)),
                ("interactions", models.IntegerField()),
                ("thumbs_up", models.IntegerField()),
                ("thumbs_down", models.IntegerField()),
                ("score_sum", models.BigIntegerField()),
                ("score_count", models.IntegerField()),
                ("rating_corrections", models.IntegerField()),
                ("reviewed", models.IntegerField()),
                ("review_corrections", models.IntegerField()),
                ("refreshed_at", models.DateTimeField()),
                (
                    "index_version",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="flywheel.indexversion",
                    ),
                ),
                (
                    "model_version",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="flywheel.modelversion",
                    ),
                ),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="flywheel.project",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("project", "day", "model_version", "model_name", "index_version"),
                        name="daily_rollup_one_per_bucket",
                        nulls_distinct=False,
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="RollupChange",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("utc_day", models.DateField()),
                (
                    "marked_at",
                    models.DateTimeField(db_default=django.db.models.functions.datetime.Now()),
                ),
                (
                    "project",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="flywheel.project",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(fields=["project", "marked_at"], name="rollup_change_project")
                ],
            },
        ),
        migrations.AddIndex(
            model_name="rating",
            index=models.Index(
                condition=models.Q(("correction__gt", "")),
                fields=["interaction"],
                name="rating_with_correction",
            ),
        ),
        migrations.RunSQL(
            sql=MARK_INTERACTIONS
            + MARK_FEEDBACK
            + "".join(_triggers(table, function) for table, function in MARKED_TABLES.items())
            + MARK_EVERY_LOGGED_DAY,
            reverse_sql="".join(_drop_triggers(table) for table in MARKED_TABLES)
            + "DROP FUNCTION IF EXISTS feedback_rollup_mark_interactions();"
            + "DROP FUNCTION IF EXISTS feedback_rollup_mark_feedback();",
        ),
    ]
