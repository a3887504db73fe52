"""`python -m bench.loop …` (what `make flywheel-bench` runs): the closed-loop benchmark on a
database, a Redis database and Celery workers of its own. `--help` lists the options."""

import os
import sys

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")
    django.setup()
    from bench.loop.command import Command

    Command().run_from_argv(["python -m", "bench.loop", *sys.argv[1:]])


if __name__ == "__main__":
    main()
