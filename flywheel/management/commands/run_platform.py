from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from config.platform_runner import PlatformStartError, platform_run


class Command(BaseCommand):
    help = "Migrate, bootstrap the demo, and run web, Celery workers and beat until Ctrl-C."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host: str, port: int, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        call_command("bootstrap_demo")
        try:
            status = platform_run(host=host, port=port, log=self.stdout.write)
        except PlatformStartError as error:
            raise CommandError(str(error)) from error
        if status:
            raise SystemExit(status)
