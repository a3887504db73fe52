"""Every periodic task, declared here and only here.

`periodic_tasks_sync()` writes this list into django-celery-beat's tables (it runs after every
`migrate`), so beat's DatabaseScheduler runs exactly what is declared. Admins may pause a task
in the Django admin; the sync keeps their `enabled` choice and resets everything else.
"""

from dataclasses import dataclass, field

from django.db import transaction

DECLARED_IN_CODE = "Declared in config/periodic.py; edits other than 'enabled' are overwritten."


@dataclass(frozen=True)
class PeriodicTaskSpec:
    name: str
    task: str
    crontab: dict[str, str] = field(default_factory=dict)


PERIODIC_TASKS: tuple[PeriodicTaskSpec, ...] = (
    PeriodicTaskSpec(
        name="Publish the outbox: tasks stored while Redis was down",
        task="flywheel.tasks.outbox.outbox_relay",
        crontab={"minute": "*"},
    ),
    PeriodicTaskSpec(
        # The overview shows how far behind they are; every minute keeps that under two.
        name="Refresh the dashboards' daily rollups",
        task="feedback.tasks.rollups_refresh_due",
        crontab={"minute": "*"},
    ),
    PeriodicTaskSpec(
        name="Clear expired dashboard sessions",
        task="flywheel.tasks.housekeeping.clear_expired_sessions",
        crontab={"minute": "17", "hour": "3"},
    ),
    PeriodicTaskSpec(
        name="Index documents whose indexing task was lost",
        task="flywheel.tasks.indexing.documents_index_stale",
        crontab={"minute": "*/10"},
    ),
    PeriodicTaskSpec(
        name="Curate interactions whose curation task was lost",
        task="retrain.tasks.curation.curation_sweep",
        crontab={"minute": "5-59/10"},
    ),
    PeriodicTaskSpec(
        name="Snapshot a dataset version of every project that changed",
        task="retrain.tasks.curation.datasets_snapshot_all",
        crontab={"minute": "30", "hour": "2"},
    ),
    PeriodicTaskSpec(
        name="Retry or fail jobs whose worker died",
        task="retrain.tasks.jobs.reap_stale_jobs",
        crontab={"minute": "*"},
    ),
    PeriodicTaskSpec(
        name="Evaluate running experiments: deadlines, safety, verdicts",
        task="retrain.tasks.experiments.experiments_evaluate_all",
        crontab={"minute": "*"},
    ),
    PeriodicTaskSpec(
        name="Start index refreshes and retraining that are due",
        task="retrain.tasks.jobs.start_due_jobs",
        crontab={"minute": "15", "hour": "*/6"},
    ),
)


def periodic_tasks_sync(*, specs: tuple[PeriodicTaskSpec, ...] = PERIODIC_TASKS) -> None:
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    with transaction.atomic():
        for spec in specs:
            schedule, _ = CrontabSchedule.objects.get_or_create(
                minute=spec.crontab.get("minute", "*"),
                hour=spec.crontab.get("hour", "*"),
                day_of_week=spec.crontab.get("day_of_week", "*"),
                day_of_month=spec.crontab.get("day_of_month", "*"),
                month_of_year=spec.crontab.get("month_of_year", "*"),
                timezone="UTC",
            )
            PeriodicTask.objects.update_or_create(
                name=spec.name,
                defaults={
                    "task": spec.task,
                    "crontab": schedule,
                    "interval": None,
                    "description": DECLARED_IN_CODE,
                },
            )
        declared_names = [spec.name for spec in specs]
        PeriodicTask.objects.filter(description=DECLARED_IN_CODE).exclude(
            name__in=declared_names
        ).delete()
