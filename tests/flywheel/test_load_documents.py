"""`manage.py load_documents`: every supported format with its title, and the files it skips
listed with the reason."""

import pytest
from django.core.management import call_command

from flywheel.document_files import DOCUMENT_FILE_MAX_BYTES
from flywheel.models import Chunk, Document
from tests.pdf_files import pdf_with_text

RST_MANUAL = """\
=============
Sensor manual
=============

Power saving
============

The sensor sleeps after 30 minutes without readings.

Pairing
=======

Hold the button for five seconds to pair.

.. raw:: html

   <script>alert(1)</script>

.. include:: /etc/passwd
"""


@pytest.fixture
def docs_folder(tmp_path):
    folder = tmp_path / "docs"
    (folder / "guides").mkdir(parents=True)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "guides" / "export.md").write_text("# Exporting\n\nAdmins export as ZIP.\n")
    (folder / "billing.html").write_text(
        "<html><head><title>Billing FAQ</title></head>"
        "<body><h1>Invoices</h1><p>Invoices are sent monthly.</p></body></html>"
    )
    (folder / "bin.htm").write_text("<h1>The  bin</h1><p>Notes stay 30 days.</p>")
    (folder / "sync.txt").write_text("Sync runs every minute.\n")
    (folder / "manual.rst").write_text(RST_MANUAL)
    (folder / "warranty.pdf").write_bytes(
        pdf_with_text(["The warranty lasts two years."], title="Warranty terms")
    )
    (folder / "battery.pdf").write_bytes(pdf_with_text(["Batteries last 18 months."]))
    (folder / "scan.pdf").write_bytes(pdf_with_text([]))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 then nothing a reader can use")
    (folder / "latin1.txt").write_bytes("Caf\xe9 au lait".encode("latin-1"))
    (folder / "empty.md").write_text("  \n")
    (folder / "slides.pptx").write_bytes(b"PK\x03\x04")
    (folder / "huge.txt").write_text("x" * (DOCUMENT_FILE_MAX_BYTES + 1))
    return folder


@pytest.mark.django_db
def test_each_format_is_loaded_with_its_title_and_the_skipped_files_are_listed(
    project, docs_folder, one_torch_thread, capsys
):
    call_command("load_documents", str(docs_folder), "--project", project.slug)

    output = capsys.readouterr().out
    documents = {
        document.source_uri: (document.title, document.content_type)
        for document in Document.objects.filter(project=project)
    }
    assert documents == {
        "guides/export.md": ("Exporting", "markdown"),
        "billing.html": ("Billing FAQ", "html"),  # <title> before the first <h1>
        "bin.htm": ("The bin", "html"),  # no <title>: the first <h1>
        "sync.txt": ("Sync", "text"),
        "manual.rst": ("Sensor manual", "html"),
        "warranty.pdf": ("Warranty terms", "text"),  # the PDF's own title
        "battery.pdf": ("Battery", "text"),  # none: the file name
    }
    skipped = sorted(line for line in output.splitlines() if line.startswith("skipped "))
    assert skipped == [
        "skipped broken.pdf: not a readable PDF (" + skipped[0].split("(", 1)[1],
        "skipped empty.md: the file is empty",
        f"skipped huge.txt: larger than 5 MiB ({DOCUMENT_FILE_MAX_BYTES + 1} bytes)",
        "skipped latin1.txt: not UTF-8 text",
        "skipped scan.pdf: the PDF holds no text (a scan needs OCR first)",
        "skipped slides.pptx: not a supported file type "
        "(use .md, .markdown, .txt, .html, .htm, .rst, .pdf)",
    ]
    assert ".git" not in output
    assert output.splitlines()[-1].startswith("7 created, 6 skipped; ")


@pytest.mark.django_db
def test_restructured_text_is_split_at_its_sections_and_its_directives_stay_inert(
    project, docs_folder, one_torch_thread
):
    call_command("load_documents", str(docs_folder), "--project", project.slug)

    manual = Document.objects.get(project=project, source_uri="manual.rst")
    passages = {chunk.heading: chunk.text for chunk in Chunk.objects.filter(document=manual)}
    assert "30 minutes" in passages["Sensor manual > Power saving"]
    assert "five seconds" in passages["Sensor manual > Pairing"]
    assert "<script>" not in manual.content and "root:" not in manual.content


@pytest.mark.django_db
def test_a_pdf_is_indexed_by_its_text(project, docs_folder, one_torch_thread):
    call_command("load_documents", str(docs_folder), "--project", project.slug)

    warranty = Document.objects.get(project=project, source_uri="warranty.pdf")
    assert warranty.indexed_hash == warranty.content_hash
    [passage] = Chunk.objects.filter(document=warranty)
    assert "The warranty lasts two years." in passage.text


@pytest.mark.django_db
def test_loading_again_changes_nothing_and_still_lists_the_skips(
    project, docs_folder, one_torch_thread, capsys
):
    call_command("load_documents", str(docs_folder), "--project", project.slug)
    capsys.readouterr()

    call_command("load_documents", str(docs_folder), "--project", project.slug)

    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary.startswith("7 unchanged, 6 skipped; ")
    assert Document.objects.filter(project=project).count() == 7
