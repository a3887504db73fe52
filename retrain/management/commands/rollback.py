from django.core.management.base import BaseCommand, CommandError

from flywheel.management.projects import project_for_command
from retrain.promotion import index_version_rollback, model_version_rollback


class Command(BaseCommand):
    help = "Put the previous production model version, or the previous index version, back."

    def add_arguments(self, parser) -> None:
        parser.add_argument("what", choices=["model", "index"])
        parser.add_argument("--project", required=True, help="project slug")

    def handle(self, *args, what: str, project: str, **options) -> None:
        found = project_for_command(project)
        rollback = model_version_rollback if what == "model" else index_version_rollback
        restored = rollback(project=found)
        if restored is None:
            raise CommandError(f"There is no earlier {what} version to go back to")
        self.stdout.write(f"Restored {restored}")
