from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from flywheel.models import Document, Project
from flywheel.services.verified_answers import verified_answers_mark_stale

CONTENT_TYPE_BY_SUFFIX = {
    ".txt": Document.ContentType.TEXT,
    ".md": Document.ContentType.MARKDOWN,
    ".markdown": Document.ContentType.MARKDOWN,
    ".html": Document.ContentType.HTML,
    ".htm": Document.ContentType.HTML,
}


@dataclass(frozen=True)
class DocumentUpsertResult:
    document: Document
    outcome: str  # "created", "updated" or "unchanged"

    @property
    def needs_indexing(self) -> bool:
        return self.outcome != "unchanged"


def document_upsert(
    *,
    project: Project,
    source_uri: str,
    title: str,
    content: str,
    content_type: str,
    metadata: dict | None = None,
) -> DocumentUpsertResult:
    """Store a document by its source URI. Indexing is the caller's choice: enqueue
    `document_index` after commit, or call the indexing service directly."""
    metadata = metadata or {}
    content_hash = Document.hash_content(content_type=content_type, content=content)
    with transaction.atomic():
        existing = (
            Document.objects.select_for_update()
            .filter(project=project, source_uri=source_uri)
            .first()
        )
        if existing is None:
            document = Document.objects.create(
                project=project,
                source_uri=source_uri,
                title=title,
                content=content,
                content_type=content_type,
                metadata=metadata,
                content_hash=content_hash,
            )
            return DocumentUpsertResult(document=document, outcome="created")
        unchanged = (
            existing.content_hash == content_hash
            and existing.title == title
            and existing.metadata == metadata
        )
        if unchanged:
            return DocumentUpsertResult(document=existing, outcome="unchanged")
        existing.title = title
        existing.content = content
        existing.content_type = content_type
        existing.metadata = metadata
        existing.content_hash = content_hash
        # Title and metadata are part of what is indexed; force a re-index.
        existing.indexed_hash = ""
        existing.save()
        verified_answers_mark_stale(document=existing)
        return DocumentUpsertResult(document=existing, outcome="updated")


def documents_upsert_and_enqueue(
    *, project: Project, documents: list[dict]
) -> list[DocumentUpsertResult]:
    """All documents or none; the changed ones are queued for indexing once committed."""
    from flywheel.tasks.indexing import document_index

    with transaction.atomic():
        results = [document_upsert(project=project, **fields) for fields in documents]
        for result in results:
            if result.needs_indexing:
                document_index.delay_on_commit(result.document.pk)
    return results


def _title_from_text(*, path: Path, content: str) -> str:
    for line in content.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip() or path.stem
        if stripped:
            break
    return path.stem.replace("-", " ").replace("_", " ").strip().capitalize()


def documents_load_folder(*, project: Project, folder: Path) -> list[DocumentUpsertResult]:
    """Add every text, Markdown and HTML file under `folder`; the relative path is the URI."""
    results = []
    for path in sorted(folder.rglob("*")):
        content_type = CONTENT_TYPE_BY_SUFFIX.get(path.suffix.lower())
        if not path.is_file() or content_type is None:
            continue
        content = path.read_text(encoding="utf-8")
        results.append(
            document_upsert(
                project=project,
                source_uri=path.relative_to(folder).as_posix(),
                title=_title_from_text(path=path, content=content),
                content=content,
                content_type=content_type,
            )
        )
    return results
