from django.core.management.base import BaseCommand

from flywheel.management.projects import project_for_command
from retrain.datasets.snapshot import dataset_snapshot
from retrain.models import DatasetVersion


class Command(BaseCommand):
    help = "Freeze a project's curated examples into a dataset version (no-op if unchanged)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True, help="project slug")

    def handle(self, *args, project: str, **options) -> None:
        found = project_for_command(project)
        version, created = dataset_snapshot(project=found, trigger=DatasetVersion.Trigger.COMMAND)
        state = "created" if created else "unchanged, existing"
        self.stdout.write(f"Dataset v{version.number} {state}: {version.counts}")
