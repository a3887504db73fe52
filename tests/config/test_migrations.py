"""The migration graph: a new database and one migrated by the layout before the layers were
made to point one way both end at the same schema, with no data lost on the way."""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.db import connection

from config.settings.database import database_url_from_config

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
# pg_dump (--inserts) of a database migrated and filled by the code before the layers change:
# a project with a key, a document, an active index with an FAQ chunk made from a review, an
# interaction rated and corrected by a reviewer, a dataset version, a training job and the
# model version it produced.
EARLIER_DATABASE_DUMP = (
    REPOSITORY_ROOT / "tests" / "data" / "migrations" / "schema_before_layers.sql"
)
UPGRADE_DATABASE_NAME = "flywheel_upgrade_check"
APPS = ("flywheel", "feedback", "retrain")


def _url_for(name: str) -> str:
    url = database_url_from_config(connection.settings_dict)
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _columns(cursor) -> set[tuple]:
    cursor.execute(
        """
        SELECT table_name, column_name, data_type, is_nullable
        FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name ~ '^(flywheel|feedback|retrain)_'
        """
    )
    return set(cursor.fetchall())


def _manage(*arguments: str, database_url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=REPOSITORY_ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def _recreate(name: str, *, drop_only: bool = False) -> None:
    # On the server's maintenance database: CREATE DATABASE cannot run inside the test's
    # transaction.
    with psycopg.connect(_url_for("postgres"), autocommit=True) as server:
        server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            server.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture
def earlier_database(db):
    """A database restored from the dump of the earlier layout; dropped afterwards."""
    _recreate(UPGRADE_DATABASE_NAME)
    url = _url_for(UPGRADE_DATABASE_NAME)
    with psycopg.connect(url, autocommit=True) as restore:
        restore.execute(EARLIER_DATABASE_DUMP.read_text())
    yield url
    _recreate(UPGRADE_DATABASE_NAME, drop_only=True)


def test_the_apps_migrations_form_no_cycle():
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    depends_on: dict[str, set[str]] = {app: set() for app in APPS}
    for (app, _), migration in loader.disk_migrations.items():
        if app in APPS:
            depends_on[app] |= {dependency for dependency, _ in migration.dependencies
                                if dependency in APPS and dependency != app}  # fmt: skip
    assert depends_on == {"flywheel": set(), "feedback": {"flywheel"},
                          "retrain": {"flywheel", "feedback"}}  # fmt: skip


def test_a_database_of_the_earlier_layout_upgrades_without_losing_data(earlier_database):
    migrated = _manage("migrate", "--no-input", database_url=earlier_database)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    check = _manage("migrate", "--check", database_url=earlier_database)
    assert check.returncode == 0, "no migration left unapplied"

    with psycopg.connect(earlier_database) as upgraded:
        cursor = upgraded.cursor()
        cursor.execute("SELECT to_regclass('feedback_interaction') IS NULL")
        assert cursor.fetchone()[0], "the interaction log moved to the serving core's table"
        cursor.execute(
            "SELECT query_text FROM flywheel_interaction "
            "WHERE id = '11111111-1111-1111-1111-111111111111'"
        )
        assert cursor.fetchone()[0] == "How long does the bin keep notes?"
        cursor.execute(
            "SELECT r.thumb, v.ideal_answer FROM feedback_rating r "
            "JOIN feedback_review v ON v.interaction_id = r.interaction_id"
        )
        assert cursor.fetchone() == ("down", "The bin keeps notes for 30 days.")
        cursor.execute(
            "SELECT m.dataset_version_id = d.id, m.training_job_id = j.id "
            "FROM flywheel_modelversion m, retrain_datasetversion d, retrain_job j "
            "WHERE m.name = 'lora-1'"
        )
        assert cursor.fetchone() == (True, True), "lineage ids kept"
        cursor.execute(
            "SELECT count(*) FROM flywheel_chunk c JOIN feedback_review v ON v.id = c.review_id"
        )
        assert cursor.fetchone()[0] == 1, "the FAQ chunk still names its review"
        cursor.execute(
            """
            SELECT count(*) FROM pg_constraint c
            JOIN pg_class source ON source.oid = c.conrelid
            JOIN pg_class target ON target.oid = c.confrelid
            WHERE c.contype = 'f' AND source.relname LIKE 'flywheel\\_%%'
              AND target.relname !~ '^(flywheel_|auth_)'
            """
        )
        assert cursor.fetchone()[0] == 0, "no constraint from the core towards a higher layer"
        cursor.execute("SELECT app_label FROM django_content_type WHERE model = 'interaction'")
        assert [row[0] for row in cursor.fetchall()] == ["flywheel"]
        upgraded_columns = _columns(cursor)

    with connection.cursor() as fresh:  # the test database, made by the squashed migrations
        assert upgraded_columns == _columns(fresh), "the same schema as a new database"
