from django.core.management.base import BaseCommand, CommandError

from flywheel.management.projects import project_for_command
from retrain.models import Job
from retrain.promotion import (
    embedding_model_version_rollback,
    index_version_rollback,
    model_version_rollback,
)
from retrain.transitions import TransitionRefused

COMMAND_ACTOR = "manage.py rollback"


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
        try:
            if what == "retriever":
                restored_retriever = embedding_model_version_rollback(
                    project=found, trigger=Job.Trigger.COMMAND
                )
                self.stdout.write(f"Restored {restored_retriever or 'the bundled embedding model'}")
            elif what == "model":
                restored_model = model_version_rollback(project=found, actor=COMMAND_ACTOR)
                self.stdout.write(f"Restored {restored_model}")
            else:
                self.stdout.write(f"Restored {index_version_rollback(project=found)}")
        except TransitionRefused as refused:
            raise CommandError(refused.message) from refused
