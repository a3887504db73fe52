"""The knowledge base page: each document with its state in the active index."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q

from flywheel.models import Document, IndexVersion, Project


@dataclass(frozen=True)
class DocumentRow:
    id: int
    title: str
    source_uri: str
    content_type: str
    updated_at: datetime
    # "indexed": the current content's passages are in the active index; "pending": its
    # indexing task has not finished (or was lost: the periodic sweep queues it again);
    # "failed": its last attempt failed with `index_error` (the sweep tries it again).
    index_state: str
    index_error: str
    chunks: int


def documents_with_index_state(*, project: Project) -> list[DocumentRow]:
    active = IndexVersion.objects.filter(project=project, status=IndexVersion.Status.ACTIVE).first()
    documents = (
        Document.objects.filter(project=project)
        .annotate(active_chunks=Count("chunks", filter=Q(chunks__index_version=active)))
        .order_by("source_uri")
    )
    return [
        DocumentRow(
            id=document.pk,
            title=document.title,
            source_uri=document.source_uri,
            content_type=document.get_content_type_display(),
            updated_at=document.updated_at,
            index_state=(
                "indexed"
                if document.indexed_hash == document.content_hash
                else "failed"
                if document.index_error
                else "pending"
            ),
            index_error=document.index_error,
            chunks=document.active_chunks if active else 0,
        )
        for document in documents
    ]


def document_get(*, project: Project, document_id: int) -> Document | None:
    return Document.objects.filter(project=project, pk=document_id).first()
