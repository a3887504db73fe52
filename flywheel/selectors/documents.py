from flywheel.models import Document, IndexVersion, Project


def document_with_index_state(*, project: Project, document_id: int) -> dict | None:
    document = Document.objects.filter(project=project, pk=document_id).first()
    if document is None:
        return None
    active = IndexVersion.objects.filter(project=project, status=IndexVersion.Status.ACTIVE).first()
    chunks = active.chunks.filter(document=document).count() if active else 0
    return {
        "id": document.pk,
        "title": document.title,
        "source_uri": document.source_uri,
        "content_type": document.content_type,
        "metadata": document.metadata,
        "content_hash": document.content_hash,
        "indexed": document.indexed_hash == document.content_hash,
        "chunks": chunks,
    }
