"""Read a knowledge-base file — Markdown, plain text, HTML, reStructuredText or PDF — into a
title, content and content type the knowledge base stores.

reStructuredText is rendered to HTML by docutils, so its section titles become headings the
chunker splits on; a PDF's text is extracted by pypdf, page by page, as plain text.
"""

import io
import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath

# A larger file is refused: the request limit of the API, with room to spare for the form.
DOCUMENT_FILE_MAX_BYTES = 5 * 1024 * 1024

# File suffix -> how it is read.
FILE_KINDS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".html": "html",
    ".htm": "html",
    ".rst": "rst",
    ".pdf": "pdf",
}
ACCEPTED_SUFFIXES = tuple(FILE_KINDS)


class DocumentNotReadable(ValueError):
    """The file cannot become a document; the message says why, for the person who gave it."""


@dataclass(frozen=True)
class DocumentFile:
    title: str
    content: str
    content_type: str  # a Document.ContentType value


def title_from_file_name(name: str) -> str:
    stem = PurePath(name).stem
    return stem.replace("-", " ").replace("_", " ").strip().capitalize() or name


def markdown_title(*, name: str, content: str) -> str:
    """The first line if it is a '#' heading, else a title made of the file name."""
    for line in content.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip() or title_from_file_name(name)
        if stripped:
            break
    return title_from_file_name(name)


class _HtmlTitles(HTMLParser):
    """Collects the text of <title> and of the first <h1>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.first_h1: list[str] = []
        self._inside = ""
        self._h1_done = False

    def handle_starttag(self, tag, attrs):
        if tag == "title" or (tag == "h1" and not self._h1_done):
            self._inside = tag

    def handle_endtag(self, tag):
        if tag == self._inside:
            self._h1_done = self._h1_done or tag == "h1"
            self._inside = ""

    def handle_data(self, data):
        if self._inside == "title":
            self.title.append(data)
        elif self._inside == "h1":
            self.first_h1.append(data)


def _squeezed(parts: list[str]) -> str:
    return " ".join("".join(parts).split())


def html_title(*, name: str, content: str) -> str:
    """<title>, else the first <h1>, else a title made of the file name."""
    parser = _HtmlTitles()
    parser.feed(content)
    parser.close()
    return _squeezed(parser.title) or _squeezed(parser.first_h1) or title_from_file_name(name)


def rst_to_html(*, name: str, content: str) -> DocumentFile:
    from docutils.core import publish_parts

    parts = publish_parts(
        source=content,
        source_path=name,
        writer="html5",
        settings_overrides={
            # An uploaded file may not read other files of the server or inject raw markup.
            "file_insertion_enabled": False,
            "raw_enabled": False,
            # Markup mistakes are not fatal: the text is what the knowledge base needs.
            "report_level": 5,
            "halt_level": 5,
            "warning_stream": io.StringIO(),
        },
    )
    title = " ".join(parts["title"].split())
    title = re.sub(r"<[^>]+>", "", title) or title_from_file_name(name)
    return DocumentFile(title=title, content=parts["html_body"], content_type="html")


def pdf_text(*, name: str, data: bytes) -> DocumentFile:
    from pypdf import PdfReader

    # pypdf logs every repaired defect of a damaged file; the outcome is what matters here.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted
        if not encrypted:
            pages = [(page.extract_text() or "").strip() for page in reader.pages]
            metadata_title = (reader.metadata.title if reader.metadata else None) or ""
    # A damaged file can fail anywhere inside the parser, with any exception.
    except Exception as error:
        raise DocumentNotReadable(f"not a readable PDF ({error})") from error
    if encrypted:
        raise DocumentNotReadable("the PDF is encrypted")
    text = "\n\n".join(page for page in pages if page)
    if not text:
        raise DocumentNotReadable("the PDF holds no text (a scan needs OCR first)")
    title = " ".join(str(metadata_title).split()) or title_from_file_name(name)
    return DocumentFile(title=title, content=text, content_type="text")


def document_file_read(*, name: str, data: bytes) -> DocumentFile:
    """The document a file holds; DocumentNotReadable says why there is none."""
    kind = FILE_KINDS.get(PurePath(name).suffix.lower())
    if kind is None:
        raise DocumentNotReadable(f"not a supported file type (use {', '.join(ACCEPTED_SUFFIXES)})")
    if len(data) > DOCUMENT_FILE_MAX_BYTES:
        raise DocumentNotReadable(
            f"larger than {DOCUMENT_FILE_MAX_BYTES // (1024 * 1024)} MiB ({len(data)} bytes)"
        )
    if kind == "pdf":
        return pdf_text(name=name, data=data)
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DocumentNotReadable("not UTF-8 text") from error
    if not content.strip():
        raise DocumentNotReadable("the file is empty")
    if kind == "rst":
        return rst_to_html(name=name, content=content)
    if kind == "html":
        return DocumentFile(
            title=html_title(name=name, content=content), content=content, content_type="html"
        )
    if kind == "markdown":
        return DocumentFile(
            title=markdown_title(name=name, content=content),
            content=content,
            content_type="markdown",
        )
    # A plain-text file may still open with a '#' title line, as the Markdown ones do.
    return DocumentFile(
        title=markdown_title(name=name, content=content), content=content, content_type="text"
    )
