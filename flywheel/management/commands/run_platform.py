from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from config.platform_runner import PlatformStartError, platform_run
from flywheel.management.welcome import ADMIN_USERNAME, welcome_lines
from flywheel.services import demo_bootstrap


class Command(BaseCommand):
    help = "Migrate, bootstrap the demo, and run web, Celery workers and beat until Ctrl-C."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host: str, port: int, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        outcome = demo_bootstrap(
            admin_username=ADMIN_USERNAME,
            knowledge_base=Path(settings.BASE_DIR) / "demo" / "knowledge_base",
        )
        counts = outcome.document_counts
        self.stdout.write(
            f"Demo project '{outcome.project.slug}': {counts.get('created', 0)} documents added, "
            f"{counts.get('updated', 0)} updated, {counts.get('unchanged', 0)} unchanged"
        )
        try:
            status = platform_run(
                host=host,
                port=port,
                log=self.stdout.write,
                welcome=welcome_lines(outcome=outcome, base_url=f"http://{host}:{port}/"),
            )
        except PlatformStartError as error:
            raise CommandError(str(error)) from error
        if status:
            raise SystemExit(status)
