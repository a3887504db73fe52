from django.core.management.base import BaseCommand, CommandError

from flywheel.models import Project
from retrain.models import DatasetVersion
from retrain.services import dataset_snapshot


class Command(BaseCommand):
    help = "Freeze a project's curated examples into a dataset version (no-op if unchanged)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True, help="project slug")

    def handle(self, *args, project: str, **options) -> None:
        found = Project.objects.filter(slug=project).first()
        if found is None:
            raise CommandError(f"No project with slug {project!r}")
        version, created = dataset_snapshot(project=found, trigger=DatasetVersion.Trigger.COMMAND)
        state = "created" if created else "unchanged, existing"
        self.stdout.write(f"Dataset v{version.number} {state}: {version.counts}")
