"""Curation on real workers: a rating triggers it through the queue, and two workers curating
the same interactions at once create every example exactly once."""

import json

import pytest
from celery import group
from django.db import connection

from config.queues import Queue
from config.settings.database import database_url_from_config
from feedback.services.ratings import rating_submit
from flywheel.models import Interaction
from retrain.models import InstructionExample
from retrain.tasks.curation import curation_sweep, interaction_curate
from tests.conftest import bearer, wait_for, worker_start
from tests.factories import PARAPHRASES, ProjectFactory, served


@pytest.mark.django_db(transaction=True)
def test_a_rating_through_the_api_is_curated_by_a_worker(
    client, project, secret_key, celery_worker
):
    interaction = served(project, "How do I get a refund?")

    response = client.post(
        "/api/v1/ratings",
        content_type="application/json",
        **bearer(secret_key),
        data=json.dumps(
            {
                "interaction_id": str(interaction.pk),
                "rater_id": "u",
                "thumb": "down",
                "correction": "Ask within 14 days.",
            }
        ),
    )

    assert response.status_code == 201
    example = wait_for(
        lambda: InstructionExample.objects.filter(interaction=interaction).first(),
        what="the worker curating the rated interaction",
        deadline_seconds=60,
    )
    assert example.signal == "user_correction"
    assert example.messages[-1]["content"] == "Ask within 14 days."


@pytest.mark.django_db(transaction=True)
def test_the_sweep_curates_what_was_missed(project, celery_worker):
    interaction = served(project, "Where is the bin?")
    # A rating stored while its task was lost: written without the after-commit hook.
    from feedback.models import Rating

    Rating.objects.create(interaction=interaction, rater_id="u", source="api", thumb="up")

    assert curation_sweep.delay().get(timeout=60) == 1
    wait_for(
        lambda: InstructionExample.objects.filter(interaction=interaction).exists(),
        what="the swept interaction being curated",
        deadline_seconds=60,
    )
    assert curation_sweep.delay().get(timeout=60) == 0


@pytest.fixture
def two_workers(django_db_setup, tmp_path):
    database_url = database_url_from_config(connection.settings_dict)
    workers = []
    try:
        for n in range(2):
            workers.append(
                worker_start(
                    database_url=database_url,
                    log_path=tmp_path / f"worker{n}.log",
                    queues=[Queue.CURATION.value],
                )
            )
        yield workers
    finally:
        for worker in workers:
            worker.stop()


@pytest.mark.django_db(transaction=True)
def test_two_workers_curating_the_same_interactions_at_once_create_each_example_once(
    two_workers,
):
    project = ProjectFactory()
    interactions: list[Interaction] = []
    for question in [q for group_ in PARAPHRASES for q in group_]:
        interaction = served(project, question)
        rating_submit(interaction=interaction, rater_id="u", source="api", thumb="up")
        interactions.append(interaction)

    # Every interaction three times over, spread across both workers.
    jobs = group(interaction_curate.s(str(i.pk)) for i in interactions * 3).apply_async()
    jobs.get(timeout=120)

    examples = InstructionExample.objects.filter(project=project)
    assert examples.count() == len(interactions)
    clusters = {e.interaction_id: e.cluster for e in examples}
    for paraphrases in PARAPHRASES:
        members = [i.pk for i in interactions if i.query_text in paraphrases]
        assert len({clusters[pk] for pk in members}) == 1, paraphrases
    assert examples.filter(status="included").count() == len(PARAPHRASES)
    for worker in two_workers:
        assert "interaction_curate" in worker.log_path.read_text(), "both workers took tasks"
