import json

from django.core.management.base import BaseCommand, CommandError

from flywheel.management.projects import project_for_command
from retrain.jobs.lifecycle import InvalidJobParameters, job_create
from retrain.management.follow import job_follow
from retrain.models import Job
from retrain.transitions import JobAlreadyUnfinished


class Command(BaseCommand):
    help = (
        "Start a job (index_refresh, lora_training, retriever_training, evaluation, "
        "dataset_snapshot, recuration) on the "
        "workers, and optionally wait for it. Parameters: --param key=value (JSON values)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("kind", choices=Job.Kind.values)
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument("--wait", action="store_true", help="follow it until it ends")

    def handle(self, *args, kind: str, project: str, param: list[str], wait: bool, **options):
        found = project_for_command(project)
        parameters = {}
        for item in param:
            key, separator, raw = item.partition("=")
            if not separator:
                raise CommandError(f"--param {item!r} is not KEY=VALUE")
            try:
                parameters[key] = json.loads(raw)
            except json.JSONDecodeError:
                parameters[key] = raw
        try:
            job = job_create(
                project=found, kind=kind, trigger=Job.Trigger.COMMAND, parameters=parameters
            )
        except (InvalidJobParameters, JobAlreadyUnfinished) as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"Job {job.pk} queued: {job.get_kind_display()}")
        if not wait:
            return
        job_follow(job, write=self.stdout.write)
