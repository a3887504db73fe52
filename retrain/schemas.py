from datetime import datetime

from ninja import Schema


class DatasetVersionOut(Schema):
    id: int
    number: int
    content_hash: str
    counts: dict
    stats: dict
    diff: dict
    policy: dict
    trigger: str
    created_at: datetime


class DatasetSnapshotOut(Schema):
    created: bool
    dataset_version: DatasetVersionOut


class JobIn(Schema):
    kind: str
    parameters: dict = {}


class JobOut(Schema):
    id: int
    kind: str
    state: str
    progress: int
    progress_message: str
    parameters: dict
    metrics: dict
    log_tail: str
    error: str
    trigger: str
    cancel_requested: bool
    attempts: int
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    dataset_version_id: int | None
    model_version_id: int | None
    index_version_id: int | None


class ModelVersionOut(Schema):
    id: int
    name: str
    status: str
    base_model: str
    adapter_path: str
    metrics: dict
    promoted_at: datetime | None
    dataset_version_id: int | None
    training_job_id: int | None
    parent_id: int | None
    created_at: datetime


class IndexVersionOut(Schema):
    id: int
    number: int
    status: str
    embedding_model: str
    # The fine-tuned retriever that embedded it; null: the bundled model.
    embedding_model_version_id: int | None
    stats: dict
    activated_at: datetime | None
    built_by_job_id: int | None
    created_at: datetime


class EmbeddingModelVersionOut(Schema):
    """A retriever; where its files lie stays on the server."""

    id: int
    name: str
    status: str
    metrics: dict
    promoted_at: datetime | None
    training_job_id: int | None
    parent_id: int | None
    created_at: datetime


class EmbeddingModelRollbackOut(Schema):
    # null: the bundled embedding model serves again.
    restored: EmbeddingModelVersionOut | None
    # The index retrieval reads now: one the restored retriever built, when there is one;
    # otherwise an index refresh was queued to build it.
    active_index_version_id: int | None
