from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from flywheel.document_files import ACCEPTED_SUFFIXES
from flywheel.management.projects import project_for_command
from flywheel.services import document_index, documents_load_folder_report


class Command(BaseCommand):
    help = (
        f"Add every {', '.join(ACCEPTED_SUFFIXES)} file under a folder to a project's knowledge "
        "base (the relative path is the source URI), index the new and changed ones, and list "
        "the files skipped and why."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("folder", type=Path)
        parser.add_argument("--project", required=True, help="project slug")

    def handle(self, *args, folder: Path, project: str, **options) -> None:
        found = project_for_command(project)
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder")
        report = documents_load_folder_report(project=found, folder=folder)
        counts: dict[str, int] = {}
        chunks = 0
        for result in report.results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
            chunks += document_index(document_id=result.document.pk) or 0
        for skipped in report.skipped:
            self.stdout.write(self.style.WARNING(f"skipped {skipped.path}: {skipped.reason}"))
        parts = [f"{count} {outcome}" for outcome, count in sorted(counts.items())]
        if report.skipped:
            parts.append(f"{len(report.skipped)} skipped")
        self.stdout.write(
            f"{', '.join(parts) or 'no documents found'}; {chunks} chunks in the index"
        )
