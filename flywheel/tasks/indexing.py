from celery import shared_task

from flywheel.services import indexing


@shared_task
def document_index(document_id: int) -> int | None:
    try:
        return indexing.document_index(document_id=document_id)
    except Exception as error:
        indexing.document_index_failure_record(document_id=document_id, error=error)
        raise


@shared_task
def documents_index_stale() -> int:
    """The sweeper: re-enqueue documents whose indexing task was lost."""
    stale = indexing.documents_stale_ids()
    for document_id in stale:
        document_index.delay(document_id)
    return len(stale)
