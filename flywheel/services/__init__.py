"""Writes of the serving core. Keyword-only, typed, named <entity>_<action>."""

from flywheel.services.api_keys import (
    CreatedApiKey,
    api_key_create,
    api_key_record_use,
    api_key_revoke,
)
from flywheel.services.documents import (
    DocumentUpsertResult,
    FolderLoadReport,
    document_delete,
    document_ingest_file,
    document_upsert,
    documents_load_folder,
    documents_load_folder_report,
    documents_upsert_and_enqueue,
)
from flywheel.services.housekeeping import expired_sessions_clear
from flywheel.services.indexing import document_index, index_version_ensure_active
from flywheel.services.projects import (
    DemoBootstrapResult,
    admin_user_ensure,
    demo_bootstrap,
    project_get_or_create,
)

__all__ = [
    "CreatedApiKey",
    "DemoBootstrapResult",
    "DocumentUpsertResult",
    "FolderLoadReport",
    "admin_user_ensure",
    "api_key_create",
    "api_key_record_use",
    "api_key_revoke",
    "demo_bootstrap",
    "document_delete",
    "document_index",
    "document_ingest_file",
    "document_upsert",
    "documents_load_folder",
    "documents_load_folder_report",
    "documents_upsert_and_enqueue",
    "expired_sessions_clear",
    "index_version_ensure_active",
    "project_get_or_create",
]
