"""Periodic tasks are declared in code and synced into django-celery-beat."""

import pytest
from django_celery_beat.models import PeriodicTask

from config.periodic import (
    DECLARED_IN_CODE,
    PERIODIC_TASKS,
    PeriodicTaskSpec,
    periodic_tasks_sync,
)


@pytest.mark.django_db
def test_migrate_syncs_every_declared_task_into_beat():
    synced = {task.name: task for task in PeriodicTask.objects.all()}
    for spec in PERIODIC_TASKS:
        assert synced[spec.name].task == spec.task
        assert synced[spec.name].crontab.minute == spec.crontab["minute"]


@pytest.mark.django_db
def test_sync_keeps_an_admins_pause_and_removes_tasks_no_longer_declared():
    nightly = PeriodicTaskSpec(name="Nightly", task="flywheel.tasks.nightly", crontab={"hour": "2"})
    hourly = PeriodicTaskSpec(name="Hourly", task="flywheel.tasks.hourly", crontab={"minute": "0"})
    periodic_tasks_sync(specs=(nightly, hourly))
    PeriodicTask.objects.filter(name="Nightly").update(enabled=False)
    handmade = PeriodicTask.objects.create(
        name="Made in the admin",
        task="flywheel.tasks.other",
        interval=None,
        crontab=PeriodicTask.objects.get(name="Hourly").crontab,
    )

    periodic_tasks_sync(specs=(nightly,))

    remaining = {
        task.name: task for task in PeriodicTask.objects.exclude(name__startswith="celery")
    }
    assert remaining["Nightly"].enabled is False
    assert remaining["Nightly"].description == DECLARED_IN_CODE
    assert "Hourly" not in remaining
    assert handmade.name in remaining
