from django.core.management.base import BaseCommand

from flywheel.management.projects import project_for_command
from retrain.curation.pipeline import interactions_curate_in_batches
from retrain.selectors import interaction_ids_with_feedback

BATCH_SIZE = 1000


class Command(BaseCommand):
    help = "Curate every rated or reviewed interaction of a project (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True, help="project slug")

    def handle(self, *args, project: str, **options) -> None:
        found = project_for_command(project)
        ids = interaction_ids_with_feedback(project=found)
        totals = interactions_curate_in_batches(
            project=found, interaction_ids=ids, batch_size=BATCH_SIZE
        )
        self.stdout.write(f"Curated {len(ids)} interactions: {totals}")
