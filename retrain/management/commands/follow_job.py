from django.core.management.base import BaseCommand, CommandError

from flywheel.management.projects import project_for_command
from retrain.management.follow import job_follow
from retrain.models import Job


class Command(BaseCommand):
    help = "Follow a job (started anywhere: dashboard, API, schedule) until it ends."

    def add_arguments(self, parser) -> None:
        parser.add_argument("job_id", type=int)
        parser.add_argument("--project", required=True, help="project slug")

    def handle(self, *args, job_id: int, project: str, **options) -> None:
        job = Job.objects.filter(project=project_for_command(project), pk=job_id).first()
        if job is None:
            raise CommandError(f"No job {job_id} in project {project!r}")
        job_follow(job, write=self.stdout.write)
