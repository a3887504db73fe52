"""The demo bootstrap that `make run` performs, and the folder loader behind it."""

import pytest
from django.contrib.auth import authenticate

from flywheel.models import Document
from flywheel.services import demo_bootstrap, documents_load_folder


@pytest.fixture
def knowledge_base(tmp_path):
    folder = tmp_path / "kb"
    (folder / "guides").mkdir(parents=True)
    (folder / "refunds.md").write_text("# Refunds\n\nAsk within 14 days.\n")
    (folder / "guides" / "sync.txt").write_text("Sync runs every minute.\n")
    (folder / "guides" / "page.html").write_text("<h1>Bin</h1><p>30 days.</p>")
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4 not a text format")
    return folder


@pytest.mark.django_db
def test_bootstrap_creates_the_demo_once_and_prints_a_working_password(knowledge_base):
    first = demo_bootstrap(admin_username="admin", knowledge_base=knowledge_base)
    second = demo_bootstrap(admin_username="admin", knowledge_base=knowledge_base)

    assert first.document_counts == {"created": 3}
    assert second.document_counts == {"unchanged": 3}
    assert first.admin_password and second.admin_password is None
    admin = authenticate(username="admin", password=first.admin_password)
    assert admin is not None and admin.is_superuser
    assert first.project == second.project
    assert first.secret_key.startswith("fw_sk_") and second.secret_key is None
    assert first.project.index_versions.get().chunks.count() >= 3


@pytest.mark.django_db
def test_loading_a_folder_again_updates_only_what_changed(knowledge_base):
    project = demo_bootstrap(admin_username="admin", knowledge_base=knowledge_base).project
    (knowledge_base / "refunds.md").write_text("# Refunds\n\nAsk within 30 days.\n")

    outcomes = {
        result.document.source_uri: result.outcome
        for result in documents_load_folder(project=project, folder=knowledge_base)
    }

    assert outcomes == {
        "refunds.md": "updated",
        "guides/sync.txt": "unchanged",
        "guides/page.html": "unchanged",
    }
    refunds = Document.objects.get(project=project, source_uri="refunds.md")
    assert refunds.title == "Refunds"
    assert "30 days" in refunds.content
    assert refunds.content_type == Document.ContentType.MARKDOWN
