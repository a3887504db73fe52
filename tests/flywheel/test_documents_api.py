"""POST /api/v1/documents: stored, then chunked and embedded by a real worker on `index`."""

import json

import pytest

from flywheel.models import Chunk, Document
from flywheel.selectors.retrieval import RetrievalOptions, retrieve
from flywheel.tasks.indexing import documents_index_stale
from tests.conftest import bearer, wait_for

GUIDE = {
    "title": "Exporting",
    "source_uri": "guides/export.md",
    "content_type": "markdown",
    "content": "# Exporting\n\n## Whole workspace\n\nAdmins export the workspace as a ZIP; "
    "the link stays valid for 48 hours.",
    "metadata": {"section": "data"},
}


def _post(client, key, documents):
    return client.post(
        "/api/v1/documents",
        data=json.dumps({"documents": documents}),
        content_type="application/json",
        **bearer(key),
    )


def _indexed(client, key, document_id):
    body = client.get(f"/api/v1/documents/{document_id}", **bearer(key)).json()
    return body if body["indexed"] else None


@pytest.mark.django_db(transaction=True)
def test_documents_are_indexed_by_the_worker_and_unchanged_ones_are_a_no_op(
    client, project, secret_key, celery_worker
):
    created = _post(client, secret_key, [GUIDE])
    assert created.status_code == 202
    (result,) = created.json()["documents"]
    assert result["outcome"] == "created"

    state = wait_for(
        lambda: _indexed(client, secret_key, result["id"]),
        what="the worker indexing the document",
        deadline_seconds=60,
    )
    assert state["chunks"] >= 1
    first_chunks = set(Chunk.objects.filter(document_id=result["id"]).values_list("pk", flat=True))
    found = retrieve(
        project=project,
        query="How long is the export link valid?",
        options=RetrievalOptions(top_k=1),
    )
    assert found.chunks[0].source_uri == "guides/export.md"
    assert found.chunks[0].heading == "Exporting > Whole workspace"

    again = _post(client, secret_key, [GUIDE])
    assert again.json()["documents"][0]["outcome"] == "unchanged"
    assert documents_index_stale.delay().get(timeout=30) == 0

    changed = _post(client, secret_key, [GUIDE | {"content": "# Exporting\n\nExports are CSV."}])
    assert changed.json()["documents"][0]["outcome"] == "updated"
    wait_for(
        lambda: _indexed(client, secret_key, result["id"]),
        what="the worker re-indexing the changed document",
        deadline_seconds=60,
    )
    new_chunks = list(Chunk.objects.filter(document_id=result["id"]))
    assert {chunk.pk for chunk in new_chunks}.isdisjoint(first_chunks)
    assert [chunk.text for chunk in new_chunks] == ["Exports are CSV."]


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_indexes_documents_whose_task_was_lost(project, celery_worker):
    from flywheel.services import document_upsert

    lost = document_upsert(
        project=project,
        source_uri="lost.md",
        title="Lost",
        content="Never queued.",
        content_type="markdown",
    ).document

    assert documents_index_stale.delay().get(timeout=30) == 1
    wait_for(
        lambda: Document.objects.get(pk=lost.pk).indexed_hash == lost.content_hash,
        what="the swept document being indexed",
        deadline_seconds=60,
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "documents, param",
    [
        ([GUIDE, GUIDE], None),
        ([GUIDE | {"content_type": "pdf"}], "documents.0.content_type"),
        ([GUIDE | {"content": ""}], "documents.0.content"),
        ([{"title": "No source", "content": "x"}], "documents.0.source_uri"),
        ([], "documents"),
    ],
)
def test_a_bad_document_batch_is_refused_whole(client, secret_key, documents, param):
    valid = GUIDE | {"source_uri": "valid.md"}

    response = _post(client, secret_key, [valid, *documents] if documents else [])

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param.replace("documents.0", "documents.1")
    assert not Document.objects.exists()


@pytest.mark.django_db
def test_documents_of_another_project_are_not_found(client, secret_key):
    from tests.factories import ProjectFactory

    other = Document.objects.create(
        project=ProjectFactory(),
        title="Theirs",
        source_uri="x.md",
        content="x",
        content_type="markdown",
        content_hash="0",
    )
    response = client.get(f"/api/v1/documents/{other.pk}", **bearer(secret_key))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
