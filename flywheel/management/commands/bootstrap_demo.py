from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from flywheel.services import demo_bootstrap


class Command(BaseCommand):
    help = "Create the demo project, its knowledge base and an admin user (once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--admin-username", default="admin")
        parser.add_argument(
            "--knowledge-base",
            type=Path,
            default=Path(settings.BASE_DIR) / "demo" / "knowledge_base",
        )

    def handle(self, *args, admin_username: str, knowledge_base: Path, **options) -> None:
        outcome = demo_bootstrap(admin_username=admin_username, knowledge_base=knowledge_base)
        counts = outcome.document_counts
        self.stdout.write(
            f"Demo project '{outcome.project.slug}': {counts.get('created', 0)} documents added, "
            f"{counts.get('updated', 0)} updated, {counts.get('unchanged', 0)} unchanged"
        )
        if outcome.secret_key:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo API key (shown only now): {outcome.secret_key}\n"
                    "  Try it:  curl -s http://127.0.0.1:8000/v1/chat/completions "
                    f"-H 'Authorization: Bearer {outcome.secret_key}' "
                    "-H 'Content-Type: application/json' "
                    """-d '{"messages": [{"role": "user", "content": "What does Canopy cost?"}]}'"""
                )
            )
        if outcome.admin_password:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Admin user created. Log in as '{admin_username}' with password "
                    f"'{outcome.admin_password}' (shown only now)."
                )
            )
        else:
            self.stdout.write(
                f"Admin user '{admin_username}' exists; to set a new password run "
                f"`.venv/bin/python manage.py changepassword {admin_username}`."
            )
