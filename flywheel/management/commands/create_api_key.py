from django.core.management.base import BaseCommand, CommandError

from flywheel.management.projects import project_for_command
from flywheel.models import ApiKey
from flywheel.services import api_key_create
from flywheel.services.api_keys import ApiKeyInvalid


class Command(BaseCommand):
    help = "Create an API key for a project and print it (it is shown only once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--kind", choices=ApiKey.Kind.values, default=ApiKey.Kind.SECRET)
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--scope",
            action="append",
            choices=ApiKey.Scope.values,
            help="what the key may do (repeat); default for a secret key: chat, log, read and "
            "rate; a public key can only rate",
        )
        parser.add_argument(
            "--origin",
            action="append",
            default=[],
            help="an origin allowed to use a public key, e.g. https://app.example.com (repeat)",
        )

    def handle(
        self,
        *args,
        project: str,
        kind: str,
        name: str,
        scope: list[str] | None,
        origin: list[str],
        **options,
    ):
        found = project_for_command(project)
        try:
            created = api_key_create(
                project=found, kind=kind, name=name, allowed_origins=origin, scopes=scope
            )
        except ApiKeyInvalid as invalid:
            raise CommandError(invalid.message) from invalid
        self.stdout.write(created.raw_key)
