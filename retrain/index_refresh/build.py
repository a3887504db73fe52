"""Build a new index version from the current documents and the approved corrections:
passages whose text is unchanged keep their vectors, only new ones are embedded."""

import hashlib
import json
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Max

from flywheel.chunking import document_chunks
from flywheel.models import Chunk, Document, IndexVersion, Project
from flywheel.services.indexing import (
    chunking_options_from_settings,
    document_chunks_build,
    embedding_model_name,
    embeddings_for_passages,
    passage_for_embedding,
    passage_hash,
)
from retrain.promotion import embedding_model_version_production


@dataclass(frozen=True)
class CorrectionEntry:
    """An approved correction as the index holds it: the question and the ideal answer."""

    review_id: int
    question: str
    answer: str


def faq_passage(entry: CorrectionEntry) -> str:
    return f"Question: {entry.question}\nAnswer: {entry.answer}"


class IndexUnchanged(Exception):
    """The documents, corrections, retriever and chunking are those the active version (or a
    ready one awaiting activation) was built from: a new version would be a copy of it."""

    def __init__(self, version: IndexVersion):
        super().__init__(f"nothing changed since index v{version.number}")
        self.version = version


def index_sources_fingerprint(
    *, documents: list[Document], corrections: list[CorrectionEntry], model: str, chunking: dict
) -> str:
    """What a version is built from, as one hash: equal inputs build equal versions."""
    sources = {
        "model": model,
        "chunking": chunking,
        "documents": [[d.pk, d.title, d.content_type, d.content_hash] for d in documents],
        "corrections": [[c.review_id, c.question, c.answer] for c in corrections],
    }
    return hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()


def index_version_build(
    *,
    project: Project,
    corrections: list[CorrectionEntry],
    on_progress=None,
    on_created=None,
    built_by_job_id: int | None = None,
) -> IndexVersion:
    """Build a new, ready (not yet active) version from every current document and the given
    approved corrections (as FAQ chunks), embedded by the production retriever (the bundled
    model when none is promoted). Passages whose text and embedding model are unchanged reuse
    their stored vectors; only new passages are embedded. Raises IndexUnchanged, building
    nothing, when the active or a ready version was built from the same inputs."""
    options = chunking_options_from_settings()
    retriever = embedding_model_version_production(project=project)
    model = retriever.path if retriever is not None else embedding_model_name()
    documents = list(Document.objects.filter(project=project).order_by("pk"))
    fingerprint = index_sources_fingerprint(
        documents=documents, corrections=corrections, model=model, chunking=options.as_dict()
    )
    # The active version, or a ready one built since and not yet activated.
    same = (
        IndexVersion.objects.filter(
            project=project,
            status__in=[IndexVersion.Status.ACTIVE, IndexVersion.Status.READY],
            stats__sources_fingerprint=fingerprint,
        )
        .order_by("-number")
        .first()
    )
    if same is not None:
        raise IndexUnchanged(same)
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        latest = IndexVersion.objects.filter(project=project).aggregate(Max("number"))
        version = IndexVersion.objects.create(
            project=project,
            number=(latest["number__max"] or 0) + 1,
            status=IndexVersion.Status.BUILDING,
            embedding_model=model,
            embedding_model_version=retriever,
            chunking=options.as_dict(),
            description="Built by an index refresh.",
            built_by_job_id=built_by_job_id,
        )
    if on_created:
        on_created(version)
    reused = embedded = 0
    total = len(documents) + 1
    for number, document in enumerate(documents, start=1):
        drafts = document_chunks(
            content=document.content, content_type=document.content_type, options=options
        )
        passages = [
            passage_for_embedding(title=document.title, heading=d.heading, text=d.text)
            for d in drafts
        ]
        hashes, vectors, fresh = _embeddings_counting_fresh(project, passages, model)
        embedded += fresh
        reused += len(passages) - fresh
        Chunk.objects.bulk_create(
            document_chunks_build(
                document=document, version=version, drafts=drafts, hashes=hashes, vectors=vectors
            )
        )
        if on_progress:
            on_progress(number, total)
    faq_passages = [faq_passage(entry) for entry in corrections]
    hashes, vectors, fresh = _embeddings_counting_fresh(project, faq_passages, model)
    embedded += fresh
    reused += len(faq_passages) - fresh
    Chunk.objects.bulk_create(
        Chunk(
            project=project,
            index_version=version,
            document=None,
            kind=Chunk.Kind.FAQ,
            review_id=entry.review_id,
            position=position,
            heading="Approved correction",
            text=passage,
            metadata={"faq": True},
            content_hash=content_hash,
            embedding=vector,
        )
        for position, (entry, passage, content_hash, vector) in enumerate(
            zip(corrections, faq_passages, hashes, vectors, strict=True)
        )
    )
    version.status = IndexVersion.Status.READY
    version.stats = {
        "documents": len(documents),
        "corrections": len(corrections),
        "chunks": version.chunks.count(),
        "embeddings_reused": reused,
        "embeddings_computed": embedded,
        "sources_fingerprint": fingerprint,
    }
    version.save(update_fields=["status", "stats", "updated_at"])
    # Every document's current content is now indexed (in this version).
    for document in documents:
        Document.objects.filter(pk=document.pk, content_hash=document.content_hash).update(
            indexed_hash=document.content_hash
        )
    if on_progress:
        on_progress(total, total)
    return version


def _embeddings_counting_fresh(project: Project, passages: list[str], model: str):
    if not passages:
        return [], [], 0
    hashes = [passage_hash(passage=p, embedding_model=model) for p in passages]
    known = set(
        Chunk.objects.filter(project=project, content_hash__in=set(hashes)).values_list(
            "content_hash", flat=True
        )
    )
    fresh = len({h for h in hashes if h not in known})
    hashes, vectors = embeddings_for_passages(
        project=project, passages=passages, embedding_model=model
    )
    return hashes, vectors, fresh
