from django.core.management.base import BaseCommand, CommandError

from flywheel.management.projects import project_for_command
from retrain.models import Job
from retrain.promotion import (
    NothingToRollBack,
    embedding_model_version_rollback,
    index_version_rollback,
    model_version_rollback,
)


class Command(BaseCommand):
    help = (
        "Put the previous production model version, the previous index version, or the "
        "previous retriever (with an index it built) back."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("what", choices=["model", "index", "retriever"])
        parser.add_argument("--project", required=True, help="project slug")

    def handle(self, *args, what: str, project: str, **options) -> None:
        found = project_for_command(project)
        if what == "retriever":
            try:
                restored = embedding_model_version_rollback(
                    project=found, trigger=Job.Trigger.COMMAND
                )
            except NothingToRollBack as error:
                raise CommandError(str(error)) from error
            self.stdout.write(f"Restored {restored or 'the bundled embedding model'}")
            return
        rollback = model_version_rollback if what == "model" else index_version_rollback
        restored = rollback(project=found)
        if restored is None:
            raise CommandError(f"There is no earlier {what} version to go back to")
        self.stdout.write(f"Restored {restored}")
