"""Index refresh on a real worker: approved corrections become retrievable FAQ entries,
unchanged passages keep their vectors, serving switches at once, and rollback restores."""

import json

import pytest
from django.contrib.auth import get_user_model

from feedback.services.reviews import review_submit
from flywheel.models import ApiKey, IndexVersion
from flywheel.selectors.retrieval import RetrievalOptions, retrieve
from flywheel.services import api_key_create
from tests.conftest import DEMO_KNOWLEDGE_BASE, bearer, index_folder, wait_for
from tests.factories import ProjectFactory, served

QUESTION = "Which browser extension saves web pages into a shelf?"
PARAPHRASE = "What extension clips a web page into a shelf?"
IDEAL_ANSWER = "The Quillmate Clipper extension for Firefox and Chrome saves any page to a shelf."


def _ask(client, key) -> dict:
    response = client.post(
        "/v1/chat/completions",
        content_type="application/json",
        **bearer(key),
        data=json.dumps({"messages": [{"role": "user", "content": PARAPHRASE}], "max_tokens": 8}),
    )
    assert response.status_code == 200, response.content
    return response.json()["flywheel"]


def _finished(client, key, path):
    job = client.get(path, **bearer(key)).json()
    return job if job["state"] in {"succeeded", "failed", "cancelled"} else None


@pytest.mark.django_db(transaction=True)
def test_a_refresh_indexes_an_approved_correction_and_serving_follows_and_rolls_back(
    client, celery_worker
):
    project = ProjectFactory()
    index_folder(project, DEMO_KNOWLEDGE_BASE)
    key = api_key_create(
        project=project, kind="secret", name="app", scopes=ApiKey.Scope.values
    ).raw_key
    first = IndexVersion.objects.get(project=project)
    reviewer = get_user_model().objects.create_user(username="reviewer", password="x")
    interaction = served(project, QUESTION, "I do not know.")
    review = review_submit(
        interaction=interaction, reviewer=reviewer, decision="corrected", ideal_answer=IDEAL_ANSWER
    )
    faq_source = f"faq:{review.pk}"
    before = retrieve(project=project, query=PARAPHRASE, options=RetrievalOptions(top_k=4))
    assert faq_source not in {chunk.source_uri for chunk in before.chunks}

    started = client.post(
        "/api/v1/jobs",
        data=json.dumps({"kind": "index_refresh"}),
        content_type="application/json",
        **bearer(key),
    )
    job = wait_for(
        lambda: _finished(client, key, f"/api/v1/jobs/{started.json()['id']}"),
        what="the index refresh finishing",
        deadline_seconds=120,
    )

    assert job["state"] == "succeeded", job["error"]
    second = IndexVersion.objects.get(pk=job["index_version_id"])
    first.refresh_from_db()
    assert (second.number, second.status, first.status) == (2, "active", "retired")
    assert second.stats["corrections"] == 1
    assert second.stats["embeddings_computed"] == 1, "only the new FAQ entry was embedded"
    assert second.stats["embeddings_reused"] == first.chunks.count()
    hit_rates = job["metrics"]["corrections"]
    assert hit_rates["candidate"]["hit@k"] == 1.0 and hit_rates["active"]["hit@k"] == 0.0
    after = retrieve(project=project, query=PARAPHRASE, options=RetrievalOptions(top_k=4))
    assert after.chunks[0].source_uri == faq_source
    assert IDEAL_ANSWER in after.chunks[0].text

    served_now = _ask(client, key)
    assert served_now["index_version"]["number"] == 2
    assert served_now["citations"][0]["source_uri"] == faq_source

    rolled_back = client.post("/api/v1/index-versions/rollback", **bearer(key))
    assert rolled_back.json()["number"] == 1
    assert _ask(client, key)["index_version"]["number"] == 1


@pytest.mark.django_db
def test_a_refresh_with_nothing_changed_builds_no_version_and_says_so():
    from retrain.index_refresh import job as index_refresh
    from retrain.jobs.lifecycle import job_create, job_run
    from retrain.models import Job

    project = ProjectFactory()
    index_folder(project, DEMO_KNOWLEDGE_BASE)
    built = job_create(project=project, kind="index_refresh", trigger="manual")
    assert job_run(job_id=built.pk, handler=index_refresh.run) == "succeeded"
    versions = IndexVersion.objects.filter(project=project).count()

    again = job_create(project=project, kind="index_refresh", trigger="manual")
    assert job_run(job_id=again.pk, handler=index_refresh.run) == "succeeded"

    again = Job.objects.get(pk=again.pk)
    active = IndexVersion.objects.get(project=project, status="active")
    assert IndexVersion.objects.filter(project=project).count() == versions
    assert again.metrics["unchanged"] is True
    assert again.metrics["index_version"] == active.number
    assert f"Nothing changed since index v{active.number}" in again.log_tail
    assert again.progress_message == f"Nothing changed: index v{active.number} stays active"

    # A changed document is a change: the next refresh builds a version.
    document = project.documents.first()
    document.content += "\n\nA new paragraph about shelves."
    document.content_hash = "changed"
    document.save()
    changed = job_create(project=project, kind="index_refresh", trigger="manual")
    assert job_run(job_id=changed.pk, handler=index_refresh.run) == "succeeded"
    assert IndexVersion.objects.filter(project=project).count() == versions + 1
