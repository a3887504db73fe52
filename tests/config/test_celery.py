"""Tasks travel through the real Redis to a real worker, and land on the right queue."""

from datetime import timedelta

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone

from config.celery import app as celery_app
from flywheel.tasks.housekeeping import clear_expired_sessions

TASK_RESULT_DEADLINE_SECONDS = 60


def _session(*, expires_in: timedelta) -> str:
    store = SessionStore()
    store["seen"] = True
    store.create()
    Session.objects.filter(session_key=store.session_key).update(
        expire_date=timezone.now() + expires_in
    )
    return store.session_key


@pytest.mark.django_db(transaction=True)
def test_a_task_sent_through_redis_runs_on_the_worker_and_changes_postgres(celery_worker):
    expired = _session(expires_in=timedelta(days=-1))
    live = _session(expires_in=timedelta(days=1))

    result = clear_expired_sessions.delay()

    assert result.get(timeout=TASK_RESULT_DEADLINE_SECONDS) == 1
    remaining = set(Session.objects.values_list("session_key", flat=True))
    assert live in remaining
    assert expired not in remaining


@pytest.mark.parametrize(
    "task_name, queue",
    [
        ("flywheel.tasks.housekeeping.clear_expired_sessions", "default"),
        ("flywheel.tasks.indexing.document_index", "index"),
        ("retrain.tasks.curation.interaction_curate", "curation"),
        ("retrain.tasks.training.adapter_train", "training"),
    ],
)
def test_tasks_are_routed_to_the_queue_their_module_names(task_name, queue):
    route = celery_app.amqp.router.route({}, task_name)
    assert route["queue"].name == queue


def test_celery_speaks_json_only_and_limits_task_time():
    assert celery_app.conf.task_serializer == "json"
    assert celery_app.conf.accept_content == ["json"]
    assert 0 < celery_app.conf.task_soft_time_limit < celery_app.conf.task_time_limit
    assert celery_app.conf.worker_prefetch_multiplier == 1
