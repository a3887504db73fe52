from django.core.management.base import BaseCommand, CommandError

from flywheel.management.projects import project_for_command
from flywheel.models import IndexVersion, ModelVersion
from retrain.promotion import index_version_activate, model_version_promote
from retrain.transitions import TransitionRefused


class Command(BaseCommand):
    help = (
        "Promote a model version to production (by name; one its evaluation did not "
        "recommend needs --reason), or activate an index version (by number)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("what", choices=["model", "index"])
        parser.add_argument("version", help="model version name, or index version number")
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument(
            "--reason", default="", help="why, for a model version promoted by hand"
        )

    def handle(self, *args, what: str, version: str, project: str, reason: str, **options):
        found = project_for_command(project)
        try:
            if what == "model":
                model = ModelVersion.objects.filter(project=found, name=version).first()
                if model is None:
                    raise CommandError(f"No model version named {version!r} in {found.slug}")
                promoted = model_version_promote(
                    version=model, reason=reason, actor="manage.py promote"
                )
                self.stdout.write(f"{promoted.name} is now in production")
                return
            index = IndexVersion.objects.filter(
                project=found, number=int(version) if version.isdigit() else -1
            ).first()
            if index is None:
                raise CommandError(f"No index version {version!r} in {found.slug}")
            activated = index_version_activate(version=index)
            self.stdout.write(f"Index v{activated.number} is now active")
        except TransitionRefused as refused:
            raise CommandError(refused.message) from refused
