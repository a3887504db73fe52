from datetime import datetime
from pathlib import Path

from ninja import Field, Schema
from pydantic import field_validator

from flywheel.api.schemas import InputSchema, Metadata
from retrain.models import Job


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
    # Under the project's policy as it is now: the eval examples the promotion gate needs, and
    # why this version's eval split falls short of them ("" when it does not).
    eval_examples_needed: int = 0
    eval_warning: str = ""


class DatasetSnapshotOut(Schema):
    created: bool
    dataset_version: DatasetVersionOut


class JobIn(InputSchema):
    kind: str = Field(..., json_schema_extra={"enum": list(Job.Kind.values)})
    parameters: Metadata = Field(
        default_factory=dict, description="Per kind; see the operation's description."
    )

    @field_validator("kind")
    @classmethod
    def _a_known_kind(cls, kind: str) -> str:
        if kind not in Job.Kind.values:
            raise ValueError(f"must be one of {', '.join(Job.Kind.values)}")
        return kind


class JobOut(Schema):
    id: int
    kind: str
    state: str
    progress: int
    progress_message: str
    parameters: dict
    metrics: dict
    log_tail: str
    # The failure's last line: the traceback stays on the server (it names its files).
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

    @staticmethod
    def resolve_error(job) -> str:
        lines = job.error.strip().splitlines()
        return lines[-1] if lines else ""


# Folder names that say what a folder holds rather than which model it is.
GENERIC_FOLDER_NAMES = {"model", "adapter"}


def _folder_name(path: str) -> str:
    """Where a model lies stays on the server; the name of its folder (or of the folder above,
    for one named just `model`) tells it."""
    names = [part for part in Path(path).parts if part not in GENERIC_FOLDER_NAMES]
    return names[-1] if path and names else ""


class ModelVersionOut(Schema):
    """A model version; where its files lie stays on the server."""

    id: int
    name: str
    status: str
    # The base model's folder name; empty: the configured default (FLYWHEEL_BASE_MODEL).
    base_model: str
    has_adapter: bool = Field(..., description="Whether a LoRA adapter is applied")
    metrics: dict
    promoted_at: datetime | None
    dataset_version_id: int | None
    training_job_id: int | None
    parent_id: int | None
    created_at: datetime

    @staticmethod
    def resolve_base_model(version) -> str:
        return _folder_name(version.base_model)

    @staticmethod
    def resolve_has_adapter(version) -> bool:
        return bool(version.adapter_path)


class IndexVersionOut(Schema):
    id: int
    number: int
    status: str
    # The embedding model's folder name (e.g. the bundled all-MiniLM-L6-v2's).
    embedding_model: str
    # The fine-tuned retriever that embedded it; null: the bundled model.
    embedding_model_version_id: int | None
    stats: dict
    activated_at: datetime | None
    built_by_job_id: int | None
    created_at: datetime

    @staticmethod
    def resolve_embedding_model(version) -> str:
        return _folder_name(version.embedding_model)


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


class PromotionIn(Schema):
    # Required unless the version's evaluation gate decided to promote it.
    reason: str = Field("", max_length=2000, description="Why it is promoted (by hand)")
