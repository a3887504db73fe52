from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from flywheel.management.welcome import ADMIN_USERNAME, welcome_lines
from flywheel.services import demo_bootstrap


class Command(BaseCommand):
    help = "Create the demo project, its knowledge base and an admin user (once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--knowledge-base",
            type=Path,
            default=Path(settings.BASE_DIR) / "demo" / "knowledge_base",
        )
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000/",
            help="where the platform answers, for the addresses printed",
        )

    def handle(self, *args, knowledge_base: Path, base_url: str, **options) -> None:
        outcome = demo_bootstrap(admin_username=ADMIN_USERNAME, knowledge_base=knowledge_base)
        counts = outcome.document_counts
        self.stdout.write(
            f"Demo project '{outcome.project.slug}': {counts.get('created', 0)} documents added, "
            f"{counts.get('updated', 0)} updated, {counts.get('unchanged', 0)} unchanged"
        )
        base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.stdout.write("\n".join(welcome_lines(outcome=outcome, base_url=base_url)))
