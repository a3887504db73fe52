"""Chunk, embed and store documents in the project's active index version."""

import hashlib
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from flywheel.chunking import ChunkingOptions, document_chunks
from flywheel.ml.bundled import embedding_model_path
from flywheel.ml.loading import embed_texts
from flywheel.models import Chunk, Document, IndexVersion, Project


def chunking_options_from_settings() -> ChunkingOptions:
    return ChunkingOptions(
        max_chars=settings.FLYWHEEL_CHUNK_MAX_CHARS,
        overlap_chars=settings.FLYWHEEL_CHUNK_OVERLAP_CHARS,
    )


def embedding_model_name() -> str:
    return str(embedding_model_path())


def passage_for_embedding(*, title: str, heading: str, text: str) -> str:
    """What gets embedded: the passage under its document title and heading path, so that a
    passage whose text never names its subject is still found by it."""
    header = " > ".join(part for part in (title, heading) if part)
    return f"{header}\n{text}" if header else text


def passage_hash(*, passage: str, embedding_model: str) -> str:
    return hashlib.sha256(f"{embedding_model}\0{passage}".encode()).hexdigest()


def index_version_ensure_active(*, project: Project) -> IndexVersion:
    active = IndexVersion.objects.filter(project=project, status=IndexVersion.Status.ACTIVE).first()
    if active:
        return active
    with transaction.atomic():
        # Serialise the creation of a project's first version between concurrent indexers.
        Project.objects.select_for_update().get(pk=project.pk)
        active = IndexVersion.objects.filter(
            project=project, status=IndexVersion.Status.ACTIVE
        ).first()
        if active:
            return active
        latest = IndexVersion.objects.filter(project=project).aggregate(Max("number"))
        return IndexVersion.objects.create(
            project=project,
            number=(latest["number__max"] or 0) + 1,
            status=IndexVersion.Status.ACTIVE,
            embedding_model=embedding_model_name(),
            chunking=chunking_options_from_settings().as_dict(),
            description="Created with the first documents; documents added later join it.",
            activated_at=timezone.now(),
        )


def embeddings_for_passages(*, project: Project, passages: list[str], embedding_model: str):
    """Vectors for `passages`, reusing any identical passage already embedded in the project."""
    hashes = [passage_hash(passage=p, embedding_model=embedding_model) for p in passages]
    known = dict(
        Chunk.objects.filter(project=project, content_hash__in=set(hashes)).values_list(
            "content_hash", "embedding"
        )
    )
    missing = [p for p, h in zip(passages, hashes, strict=True) if h not in known]
    if missing:
        fresh = embed_texts(missing, path=Path(embedding_model))
        for passage, vector in zip(missing, fresh, strict=True):
            known[passage_hash(passage=passage, embedding_model=embedding_model)] = vector
    return hashes, [known[h] for h in hashes]


def document_index(*, document_id: int) -> int | None:
    """(Re)build the document's chunks in the active index version; the number of chunks, or
    None when the document is gone or changed meanwhile (a newer task indexes it then)."""
    document = Document.objects.select_related("project").filter(pk=document_id).first()
    if document is None:
        return None
    version = index_version_ensure_active(project=document.project)
    if document.indexed_hash == document.content_hash:
        return version.chunks.filter(document=document).count()

    drafts = document_chunks(
        content=document.content,
        content_type=document.content_type,
        options=ChunkingOptions(**version.chunking),
    )
    passages = [
        passage_for_embedding(title=document.title, heading=draft.heading, text=draft.text)
        for draft in drafts
    ]
    hashes, vectors = embeddings_for_passages(
        project=document.project, passages=passages, embedding_model=version.embedding_model
    )
    with transaction.atomic():
        current = Document.objects.select_for_update().get(pk=document.pk)
        if current.content_hash != document.content_hash or current.title != document.title:
            return None
        Chunk.objects.filter(index_version=version, document=document).delete()
        Chunk.objects.bulk_create(
            document_chunks_build(
                document=document, version=version, drafts=drafts, hashes=hashes, vectors=vectors
            )
        )
        Document.objects.filter(pk=document.pk).update(
            indexed_hash=document.content_hash, index_error=""
        )
    return len(drafts)


def document_index_failure_record(*, document_id: int, error: BaseException) -> None:
    """Keep why indexing failed where the documents page shows it; the task retries."""
    message = f"{type(error).__name__}: {error}".strip()
    Document.objects.filter(pk=document_id).update(index_error=message[-1000:])


def document_chunks_build(
    *, document: Document, version: IndexVersion, drafts: list, hashes: list[str], vectors
) -> list[Chunk]:
    """The chunk rows of `document` in `version`: one per draft, with its hash and vector."""
    return [
        Chunk(
            project_id=document.project_id,
            index_version=version,
            document=document,
            position=draft.position,
            heading=draft.heading,
            text=draft.text,
            metadata=document.metadata,
            content_hash=content_hash,
            embedding=vector,
        )
        for draft, content_hash, vector in zip(drafts, hashes, vectors, strict=True)
    ]


def documents_stale_ids(*, limit: int = 1000) -> list[int]:
    """Documents whose current content is not in the index: their task was lost or failed."""
    from django.db.models import F

    return list(
        Document.objects.exclude(indexed_hash=F("content_hash"))
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
