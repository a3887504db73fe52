import uuid
from datetime import datetime
from typing import Literal

from ninja import Field, Schema
from pydantic import field_validator, model_validator

from flywheel.selectors.retrieval import RetrievalMode

Role = Literal["system", "developer", "user", "assistant", "tool"]


class ErrorDetail(Schema):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorOut(Schema):
    error: ErrorDetail


class ContentPart(Schema):
    type: str
    text: str | None = None


class ChatMessageIn(Schema):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class FlywheelChatOptions(Schema):
    """Flywheel's extension of the request (the openai client sends it with `extra_body`)."""

    rag: bool = True
    top_k: int | None = Field(default=None, ge=1, le=50)
    mode: RetrievalMode = RetrievalMode.HYBRID
    filters: dict | None = None
    query_variants: int = Field(
        default=0, ge=0, le=5, description="RAG-Fusion rephrasings to fuse in"
    )
    hyde: bool = False
    session_id: str = Field(default="", max_length=200)
    metadata: dict = Field(default_factory=dict)


class StreamOptions(Schema):
    include_usage: bool = False


class ChatCompletionIn(Schema):
    model: str = Field("flywheel", max_length=200)
    messages: list[ChatMessageIn] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice is generated.")
    user: str | None = Field(None, max_length=200)
    metadata: dict[str, str] | None = None
    flywheel: FlywheelChatOptions = Field(default_factory=FlywheelChatOptions)

    @model_validator(mode="after")
    def _has_a_user_message(self):
        if not any(message.role == "user" and message.text() for message in self.messages):
            raise ValueError("messages must contain a user message with text")
        return self

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value):
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return value


class CitationOut(Schema):
    rank: int
    chunk_id: int
    document_id: int | None
    title: str
    source_uri: str
    heading: str
    score: float


class DocumentIn(Schema):
    title: str = Field(..., min_length=1, max_length=500)
    source_uri: str = Field(..., min_length=1, max_length=2000)
    content: str = Field(..., min_length=1)
    content_type: Literal["text", "markdown", "html"] = "markdown"
    metadata: dict = Field(default_factory=dict)


class DocumentBatchIn(Schema):
    documents: list[DocumentIn] = Field(..., min_length=1, max_length=500)

    @model_validator(mode="after")
    def _unique_sources(self):
        uris = [document.source_uri for document in self.documents]
        if len(uris) != len(set(uris)):
            raise ValueError("each source_uri may appear once per batch")
        return self


class DocumentResultOut(Schema):
    id: int
    source_uri: str
    outcome: Literal["created", "updated", "unchanged"]


class DocumentBatchOut(Schema):
    documents: list[DocumentResultOut]


class DocumentOut(Schema):
    id: int
    title: str
    source_uri: str
    content_type: str
    metadata: dict
    content_hash: str
    indexed: bool
    chunks: int


class LoggedMessageIn(Schema):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str = Field(..., max_length=200_000)


class RetrievedItemIn(Schema):
    text: str = ""
    title: str = ""
    source_uri: str = ""
    document_id: int | str | None = None
    chunk_id: int | str | None = None
    score: float | None = None
    rank: int | None = Field(None, ge=1)


class InteractionIn(Schema):
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Your id for this interaction; sending it again stores nothing new.",
    )
    messages: list[LoggedMessageIn] = Field(..., min_length=1, max_length=500)
    response: str = Field(..., max_length=200_000)
    model: str = Field("", max_length=300)
    retrieved: list[RetrievedItemIn] = Field(default_factory=list, max_length=100)
    latency_ms: int | None = Field(None, ge=0, le=86_400_000)
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int | None = Field(None, ge=0)
    session_id: str = Field("", max_length=200)
    end_user_id: str = Field("", max_length=200)
    metadata: dict = Field(default_factory=dict)
    created_at: datetime | None = None

    @model_validator(mode="after")
    def _has_a_user_message(self):
        if not any(message.role == "user" for message in self.messages):
            raise ValueError("messages must contain a user message")
        return self


class InteractionBatchIn(Schema):
    interactions: list[InteractionIn] = Field(..., min_length=1, max_length=1000)


class LoggedInteractionOut(Schema):
    id: uuid.UUID
    idempotency_key: str | None
    created: bool


class InteractionBatchOut(Schema):
    interactions: list[LoggedInteractionOut]


class InteractionOut(Schema):
    id: uuid.UUID
    source: str
    idempotency_key: str | None
    session_id: str
    end_user_id: str
    messages: list[dict]
    query_text: str
    retrieved: list[dict]
    response: str
    model_name: str
    model_version_id: int | None
    index_version_id: int | None
    latency_ms: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    metadata: dict
    created_at: datetime
