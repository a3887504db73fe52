from dataclasses import dataclass
from pathlib import Path, PurePath

from django.db import transaction

from flywheel.document_files import DocumentNotReadable, document_file_read, markdown_title
from flywheel.models import Document, Project, VerifiedAnswer
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
    return markdown_title(name=path.name, content=content)


@dataclass(frozen=True)
class SkippedFile:
    path: str  # relative to the folder
    reason: str


@dataclass(frozen=True)
class FolderLoadReport:
    results: list[DocumentUpsertResult]
    skipped: list[SkippedFile]


def documents_load_folder_report(*, project: Project, folder: Path) -> FolderLoadReport:
    """Add every readable file under `folder` (see flywheel.document_files); the relative
    path is the URI. Files that cannot become documents are listed with the reason; hidden
    files and folders (a `.git`, editor backups) are passed over without a word."""
    results, skipped = [], []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        try:
            read = document_file_read(name=path.name, data=path.read_bytes())
        except (DocumentNotReadable, OSError) as error:
            skipped.append(SkippedFile(path=relative.as_posix(), reason=str(error)))
            continue
        results.append(
            document_upsert(
                project=project,
                source_uri=relative.as_posix(),
                title=read.title,
                content=read.content,
                content_type=read.content_type,
            )
        )
    return FolderLoadReport(results=results, skipped=skipped)


def documents_load_folder(*, project: Project, folder: Path) -> list[DocumentUpsertResult]:
    """What `documents_load_folder_report` stored, for callers with no use for the skips."""
    return documents_load_folder_report(project=project, folder=folder).results


def document_ingest_file(*, project: Project, name: str, data: bytes) -> DocumentUpsertResult:
    """Store an uploaded file as a document (its file name is the source URI, so uploading
    it again replaces it) and queue its indexing once committed. Raises DocumentNotReadable."""
    from flywheel.tasks.indexing import document_index

    read = document_file_read(name=name, data=data)
    with transaction.atomic():
        result = document_upsert(
            project=project,
            source_uri=PurePath(name).name,
            title=read.title,
            content=read.content,
            content_type=read.content_type,
        )
        if result.needs_indexing:
            document_index.delay_on_commit(result.document.pk)
    return result


def document_delete(*, document: Document) -> None:
    """Remove a document and its passages from every index version; the verified answers
    that rest on it are no longer served until a reviewer looks at them again."""
    with transaction.atomic():
        VerifiedAnswer.objects.filter(
            project=document.project_id,
            status=VerifiedAnswer.Status.ACTIVE,
            source_documents__has_key=str(document.pk),
        ).update(
            status=VerifiedAnswer.Status.STALE,
            status_reason=f"document {document.pk} ({document.source_uri[:200]}) was deleted",
        )
        document.delete()
