from django.core.management.base import CommandError

from flywheel.models import Project


def project_for_command(slug: str) -> Project:
    """The project a command's --project names, or a CommandError that says so."""
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise CommandError(f"No project with slug {slug!r}")
    return project
