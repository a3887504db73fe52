"""The knowledge base page: documents with their index state, upload and delete for admins."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from flywheel.document_files import DOCUMENT_FILE_MAX_BYTES
from flywheel.models import Chunk, Document, IndexVersion, VerifiedAnswer
from flywheel.services import document_index, document_upsert, index_version_ensure_active
from flywheel.tasks.indexing import document_index as document_index_task
from tests.conftest import SCREENSHOTS, user_with_role, wait_for
from tests.factories import served
from tests.pdf_files import pdf_with_text

INDEXING_DEADLINE_SECONDS = 60


def _url(name: str, project, *args) -> str:
    return reverse(f"dashboard:{name}", args=[project.slug, *args])


def _stored(project, source_uri: str, content: str, *, index: bool) -> Document:
    document = document_upsert(
        project=project,
        source_uri=source_uri,
        title=source_uri.rsplit(".", 1)[0].capitalize(),
        content=content,
        content_type="markdown",
    ).document
    if index:
        document_index(document_id=document.pk)
    return document


@pytest.fixture
def admin_client(client, project):
    client.force_login(user_with_role(project, "admin"))
    return client


@pytest.fixture
def viewer_client(client, project):
    client.force_login(user_with_role(project, "viewer"))
    return client


@pytest.mark.django_db
def test_the_list_shows_each_documents_index_state_and_passages(
    viewer_client, project, one_torch_thread
):
    _stored(project, "sync.md", "# Sync\n\nSync runs every minute.", index=True)
    _stored(project, "bin.md", "# Bin\n\nNotes stay in the bin for 30 days.", index=False)

    response = viewer_client.get(_url("documents", project))

    assert response.status_code == 200
    rows = {row.source_uri: (row.index_state, row.chunks) for row in response.context["documents"]}
    assert rows == {"bin.md": ("pending", 0), "sync.md": ("indexed", 1)}
    page = response.content.decode()
    assert "Add a document" not in page and "Delete…" not in page  # a viewer only reads


@pytest.mark.django_db
def test_a_document_whose_indexing_failed_shows_why_until_it_is_indexed(
    viewer_client, project, one_torch_thread
):
    document = _stored(project, "sync.md", "# Sync\n\nSync runs every minute.", index=False)
    active = index_version_ensure_active(project=project)
    # An embedding model folder that is not there: the real load fails, as a lost mount would.
    good_model = active.embedding_model
    IndexVersion.objects.filter(pk=active.pk).update(embedding_model="/nonexistent/retriever")

    with pytest.raises(Exception, match="nonexistent"):
        document_index_task(document.pk)

    failed = viewer_client.get(_url("documents", project))
    [row] = failed.context["documents"]
    assert row.index_state == "failed" and "nonexistent" in row.index_error
    assert "retried by the periodic sweep" in failed.content.decode()

    IndexVersion.objects.filter(pk=active.pk).update(embedding_model=good_model)
    assert document_index_task(document.pk) == 1
    [row] = viewer_client.get(_url("documents", project)).context["documents"]
    assert (row.index_state, row.index_error, row.chunks) == ("indexed", "", 1)


@pytest.mark.django_db
def test_a_viewer_may_neither_upload_nor_delete(viewer_client, project):
    document = _stored(project, "sync.md", "# Sync\n\nEvery minute.", index=False)
    upload = SimpleUploadedFile("new.md", b"# New\n\nText.")

    assert viewer_client.post(_url("document_upload", project), {"file": upload}).status_code == 403
    assert viewer_client.post(_url("document_delete", project, document.pk)).status_code == 403
    assert Document.objects.filter(project=project).count() == 1


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("slides.pptx", b"PK\x03\x04", "not a supported file type"),
        ("notes.txt", "Caf\xe9".encode("latin-1"), "not UTF-8 text"),
        ("scan.pdf", pdf_with_text([]), "the PDF holds no text"),
        ("broken.pdf", b"%PDF-1.4 nothing more", "not a readable PDF"),
        ("empty.md", b"", "The submitted file is empty."),
        ("huge.txt", b"x" * (DOCUMENT_FILE_MAX_BYTES + 1), "larger than 5 MiB"),
    ],
)
@pytest.mark.django_db
def test_a_bad_file_gets_a_form_error_and_stores_nothing(admin_client, project, name, data, error):
    response = admin_client.post(
        _url("document_upload", project), {"file": SimpleUploadedFile(name, data)}
    )

    assert response.status_code == 400
    assert error in " ".join(response.context["form"].errors["file"])
    assert error in response.content.decode()
    assert not Document.objects.filter(project=project).exists()


@pytest.mark.django_db(transaction=True)
def test_an_uploaded_file_is_stored_and_indexed_by_the_worker(admin_client, project, celery_worker):
    upload = SimpleUploadedFile("warranty.pdf", pdf_with_text(["The warranty lasts two years."]))

    response = admin_client.post(_url("document_upload", project), {"file": upload}, follow=True)

    assert response.status_code == 200
    assert "Added “Warranty”; it is being indexed." in response.content.decode()
    document = Document.objects.get(project=project, source_uri="warranty.pdf")
    wait_for(
        lambda: Document.objects.filter(
            pk=document.pk, indexed_hash=document.content_hash
        ).exists(),
        what="the worker indexing the upload",
        deadline_seconds=INDEXING_DEADLINE_SECONDS,
    )
    [passage] = Chunk.objects.filter(document=document)
    assert "two years" in passage.text


@pytest.mark.django_db
def test_deleting_a_document_asks_first_then_removes_it_and_its_passages(
    admin_client, project, one_torch_thread
):
    document = _stored(project, "bin.md", "# Bin\n\nNotes stay in the bin for 30 days.", index=True)
    keeper = _stored(project, "sync.md", "# Sync\n\nSync runs every minute.", index=True)
    resting_on_it = VerifiedAnswer.objects.create(
        project=project,
        interaction=served(project, "How long do notes stay in the bin?"),
        review_id=1,
        embedding_model="bundled",
        approved_at=timezone.now(),
        question="How long do notes stay in the bin?",
        answer="30 days.",
        source_documents={str(document.pk): document.content_hash},
        question_embedding=[0.0] * 383 + [1.0],
    )

    confirm = admin_client.get(_url("document_delete", project, document.pk))
    assert confirm.status_code == 200 and "Delete the document" in confirm.content.decode()
    assert Document.objects.filter(pk=document.pk).exists()

    response = admin_client.post(_url("document_delete", project, document.pk), follow=True)

    assert "Deleted “Bin” and its passages from the index." in response.content.decode()
    assert list(Document.objects.filter(project=project)) == [keeper]
    assert not Chunk.objects.filter(document_id=document.pk).exists()
    resting_on_it.refresh_from_db()
    assert resting_on_it.status == VerifiedAnswer.Status.STALE
    other_project_document = admin_client.post(_url("document_delete", project, 10**9))
    assert other_project_document.status_code == 404


@pytest.mark.django_db(transaction=True)
def test_an_admin_uploads_through_the_page_in_a_browser(
    page, live_server, project, celery_worker, tmp_path
):
    admin = user_with_role(project, "admin")
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", admin.username)
    page.fill("#id_password", f"pw-{admin.username}")
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}{_url('documents', project)}")
    expect(page.get_by_text("No documents yet.")).to_be_visible()

    manual = tmp_path / "manual.rst"
    manual.write_text("Sensor manual\n=============\n\nThe sensor sleeps after 30 minutes.\n")
    page.get_by_label("File").set_input_files(str(manual))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_text("Added “Sensor manual”; it is being indexed.")).to_be_visible()

    row = page.get_by_role("row", name="Sensor manual")
    wait_for(
        lambda: Document.objects.filter(project=project, indexed_hash__gt="").exists(),
        what="the worker indexing the upload",
        deadline_seconds=INDEXING_DEADLINE_SECONDS,
    )
    page.reload()
    expect(row).to_contain_text("indexed")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "documents_admin.png"), full_page=True)

    page.get_by_label("File").set_input_files(
        files=[{"name": "slides.pptx", "mimeType": "application/octet-stream", "buffer": b"PK"}]
    )
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("alert")).to_contain_text("not a supported file type")
