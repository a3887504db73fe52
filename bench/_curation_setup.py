"""A database of the curation benchmark's own.

`bench_django_setup()` recreates `flywheel_bench`, the database the other benchmarks share,
with DROP DATABASE ... WITH (FORCE): started while one of them runs (bench/retrieval.py takes
many minutes), it would drop that benchmark's data under it. The curation benchmark is set up
the same way on `flywheel_bench_curation` instead.
"""

import os

from bench._setup import REPOSITORY_ROOT, _url_with_database

CURATION_BENCH_DATABASE_NAME = "flywheel_bench_curation"


def curation_bench_django_setup(database_name: str = CURATION_BENCH_DATABASE_NAME) -> str:
    """Start (or join) the embedded PostgreSQL, recreate `database_name`, set Django up on it
    and migrate. Returns the database URL, for raw psycopg connections."""
    import psycopg

    from config.settings.database import embedded_database_url
    from config.settings.environment import env_path

    var_dir = env_path("FLYWHEEL_VAR_DIR", REPOSITORY_ROOT / "var")
    server_url = embedded_database_url(var_dir / "postgres")
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{database_name}"')
    database_url = _url_with_database(server_url, database_name)
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.development"

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    return database_url
