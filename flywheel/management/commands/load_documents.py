from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from flywheel.management.projects import project_for_command
from flywheel.services import document_index, documents_load_folder


class Command(BaseCommand):
    help = (
        "Add every .md, .txt and .html file under a folder to a project's knowledge base "
        "(the relative path is the source URI) and index the new and changed ones."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("folder", type=Path)
        parser.add_argument("--project", required=True, help="project slug")

    def handle(self, *args, folder: Path, project: str, **options) -> None:
        found = project_for_command(project)
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder")
        counts: dict[str, int] = {}
        chunks = 0
        for result in documents_load_folder(project=found, folder=folder):
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
            chunks += document_index(document_id=result.document.pk) or 0
        summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items()))
        self.stdout.write(f"{summary or 'no documents found'}; {chunks} chunks in the index")
