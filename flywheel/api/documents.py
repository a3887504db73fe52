from ninja import Router, Status

from flywheel.api.auth import ApiKeyRequest, SecretKeyAuth
from flywheel.api.errors import ApiError
from flywheel.api.schemas import DocumentBatchIn, DocumentBatchOut, DocumentOut, ErrorOut
from flywheel.selectors.documents import document_with_index_state
from flywheel.services.documents import documents_upsert_and_enqueue

router = Router(tags=["knowledge base"])


@router.post(
    "/documents",
    auth=SecretKeyAuth(scope="log"),
    response={202: DocumentBatchOut, 400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 413: ErrorOut},
    summary="Add or update documents (batch)",
)
def documents_add(request: ApiKeyRequest, payload: DocumentBatchIn):
    """Stores the documents by `source_uri` and queues the new and changed ones for chunking
    and embedding on the `index` queue. An unchanged document is a no-op."""
    results = documents_upsert_and_enqueue(
        project=request.api_key.project,
        documents=[document.dict() for document in payload.documents],
    )
    return Status(
        202,
        {
            "documents": [
                {"id": r.document.pk, "source_uri": r.document.source_uri, "outcome": r.outcome}
                for r in results
            ]
        },
    )


@router.get(
    "/documents/{document_id}",
    auth=SecretKeyAuth(scope="read"),
    response={200: DocumentOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="A document and whether its current content is indexed",
)
def document_detail(request: ApiKeyRequest, document_id: int):
    document = document_with_index_state(project=request.api_key.project, document_id=document_id)
    if document is None:
        raise ApiError(404, f"No document {document_id} in this project.", code="not_found")
    return document
