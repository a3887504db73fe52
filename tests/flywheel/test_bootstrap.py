"""The demo bootstrap that `make run` performs, and the folder loader behind it."""

import re
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

from flywheel.models import ApiKey, Document
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
    assert first.app_key.startswith("fw_sk_") and second.app_key is None
    assert first.admin_key.startswith("fw_sk_") and second.admin_key is None
    keys = {key.name: key.scopes for key in first.project.api_keys.all()}
    assert keys == {"demo": ["chat", "log", "read", "rate"], "demo-admin": ApiKey.Scope.values}
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


@pytest.mark.django_db
def test_the_bootstrap_command_prints_an_app_key_and_an_admin_key_once(knowledge_base):
    first, second = StringIO(), StringIO()

    call_command(
        "bootstrap_demo",
        knowledge_base=knowledge_base,
        base_url="http://127.0.0.1:8123",
        stdout=first,
    )
    call_command("bootstrap_demo", knowledge_base=knowledge_base, stdout=second)

    printed = first.getvalue()
    app_key = re.search(r"App key +(fw_sk_\S+)\n +\(chat, log, read, rate", printed)
    admin_key = re.search(r"Admin key +(fw_sk_\S+)\n +\(every scope", printed)
    assert app_key and admin_key
    scopes = {
        key.name: key.scopes
        for key in ApiKey.objects.filter(
            key_hash__in=[ApiKey.hash_key(app_key.group(1)), ApiKey.hash_key(admin_key.group(1))]
        )
    }
    assert scopes == {"demo": ["chat", "log", "read", "rate"], "demo-admin": ApiKey.Scope.values}
    # The addresses name the port the platform answers on.
    assert "Dashboard   http://127.0.0.1:8123/dashboard/demo/" in printed
    assert "curl -s http://127.0.0.1:8123/v1/chat/completions" in printed
    assert re.search(r"Sign in +admin, password \S+", printed)
    assert "fw_sk_" not in second.getvalue()
    assert "created on the first start" in second.getvalue()
    assert "the password set on the first start" in second.getvalue()
