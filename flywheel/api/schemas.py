import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonDict
from pydantic_core import PydanticCustomError

from flywheel.selectors.retrieval import RetrievalMode
from flywheel.validation import (
    INT4_MAX,
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    InvalidValue,
    check_metadata,
    check_timestamp,
    renderable_json,
)

Role = Literal["system", "developer", "user", "assistant", "tool"]

# Longest texts a request may carry: one message or answer, one document.
MESSAGE_MAX_CHARS = 200_000
DOCUMENT_MAX_CHARS = 5_000_000
CHAT_MAX_MESSAGES = 500


def checked(check: Callable[[Any], Any]) -> AfterValidator:
    """A flywheel.validation check as a pydantic validator: its InvalidValue becomes the
    field's error, without pydantic's "Value error, " prefix."""

    def validate(value):
        try:
            return check(value)
        except InvalidValue as error:
            raise PydanticCustomError("invalid_value", str(error)) from error

    return AfterValidator(validate)


# Text, numbers and keys anywhere in a body are checked as it is parsed
# (flywheel.api.parser); these types add the limits of the columns they end up in.
Metadata = Annotated[
    dict[str, Any],
    checked(check_metadata),
    Field(
        description=f"A JSON object of at most {METADATA_MAX_DEPTH} levels and "
        f"{METADATA_MAX_BYTES // 1024} KB as JSON.",
    ),
]
Count = Annotated[int, Field(ge=0, le=INT4_MAX)]
Timestamp = Annotated[
    datetime,
    checked(check_timestamp),
    Field(description="From 2000-01-01T00:00:00Z to one day after the current time."),
]


class InputSchema(Schema):
    """The base of every request body: numbers must be finite (text and numbers everywhere
    in the body were checked by the parser already)."""

    model_config = ConfigDict(allow_inf_nan=False)


# Reading back JSON that rows written before validation may hold in odd shapes: rendered,
# never refused.
StoredObject = Annotated[
    dict,
    BeforeValidator(
        lambda value: renderable_json(value if isinstance(value, dict) else {"value": value})
    ),
]
StoredList = Annotated[
    list,
    BeforeValidator(lambda value: renderable_json(value if isinstance(value, list) else [value])),
]


class InvalidField(Schema):
    param: str
    message: str


class ErrorDetail(Schema):
    message: str
    type: str
    code: str | None = None
    param: str | None = Field(None, description="The field at fault, as a dotted path")
    details: list[InvalidField] | None = Field(
        None, description="Every invalid field, when the schema refused several"
    )


class ErrorOut(Schema):
    error: ErrorDetail


class ContentPart(InputSchema):
    type: str = Field(..., max_length=50)
    text: str | None = Field(None, max_length=MESSAGE_MAX_CHARS)


class ChatMessageIn(InputSchema):
    role: Role
    content: (
        Annotated[str, Field(max_length=MESSAGE_MAX_CHARS)]
        | Annotated[list[ContentPart], Field(max_length=100)]
        | None
    ) = None
    name: str | None = Field(None, max_length=200)

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class FlywheelChatOptions(InputSchema):
    """Flywheel's extension of the request (the openai client sends it with `extra_body`)."""

    rag: bool = True
    top_k: int | None = Field(default=None, ge=1, le=50)
    mode: RetrievalMode = RetrievalMode.HYBRID
    filters: Metadata | None = None
    query_variants: int = Field(
        default=0, ge=0, le=5, description="RAG-Fusion rephrasings to fuse in"
    )
    hyde: bool = False
    session_id: str = Field(default="", max_length=200)
    rater_id: str = Field(
        default="",
        max_length=200,
        description="The id your app rates under for this person (the widget's rater id); "
        "keeps them in one experiment arm when `user` is not sent",
    )
    metadata: Metadata = Field(default_factory=dict)


class StreamOptions(InputSchema):
    include_usage: bool = False


# What the "user message with text" rule below means, stated for generated clients and fuzzers.
A_USER_MESSAGE_WITH_TEXT: JsonDict = {
    "contains": {
        "type": "object",
        "properties": {
            "role": {"const": "user"},
            "content": {"type": "string", "minLength": 1, "maxLength": MESSAGE_MAX_CHARS},
        },
        "required": ["role", "content"],
    }
}


UNSUPPORTED = "Not supported: present and not empty, 400 `unsupported_parameter`."


class ChatCompletionIn(InputSchema):
    model: str = Field(
        "flywheel",
        max_length=200,
        description="A name GET /v1/models lists: `flywheel` (production), `flywheel:candidate` "
        "(the newest candidate) or a model version's name; any other is 404 `model_not_found`.",
    )
    messages: list[ChatMessageIn] = Field(
        ...,
        min_length=1,
        max_length=CHAT_MAX_MESSAGES,
        description="At least one user message with text.",
        json_schema_extra=A_USER_MESSAGE_WITH_TEXT,
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: (
        Annotated[str, Field(max_length=200)]
        | Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=4)]
        | None
    ) = None
    n: int = Field(
        1, ge=1, le=128, description="Only 1 is supported: more is 400 `unsupported_parameter`."
    )
    # OpenAI parameters Flywheel does not honour, accepted only so that a request using them
    # is refused by name (400 `unsupported_parameter`, see flywheel.api.chat) rather than
    # answered as though they had been applied.
    tools: list[dict[str, Any]] | None = Field(None, max_length=128, description=UNSUPPORTED)
    tool_choice: Annotated[str, Field(max_length=50)] | dict[str, Any] | None = Field(
        None, description="Only `none` is supported."
    )
    functions: list[dict[str, Any]] | None = Field(None, max_length=128, description=UNSUPPORTED)
    function_call: Annotated[str, Field(max_length=50)] | dict[str, Any] | None = Field(
        None, description="Only `none` is supported."
    )
    response_format: dict[str, Any] | None = Field(
        None, description='Only `{"type": "text"}` is supported.'
    )
    logprobs: bool | None = Field(None, description="Only `false` is supported.")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Only 0 is supported.")
    user: str | None = Field(None, max_length=200)
    metadata: (
        Annotated[dict[str, Annotated[str, Field(max_length=512)]], checked(check_metadata)] | None
    ) = None
    flywheel: FlywheelChatOptions = Field(default_factory=FlywheelChatOptions)

    @model_validator(mode="after")
    def _has_a_user_message(self):
        if not any(message.role == "user" and message.text() for message in self.messages):
            raise ValueError("messages must contain a user message with text")
        return self


class CitationOut(Schema):
    rank: int
    chunk_id: int
    document_id: int | None
    title: str
    source_uri: str
    heading: str
    score: float


class DocumentIn(InputSchema):
    title: str = Field(..., min_length=1, max_length=500)
    source_uri: str = Field(..., min_length=1, max_length=2000)
    content: str = Field(..., min_length=1, max_length=DOCUMENT_MAX_CHARS)
    content_type: Literal["text", "markdown", "html"] = "markdown"
    metadata: Metadata = Field(default_factory=dict)


class DocumentBatchIn(InputSchema):
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


class LogInput(BaseModel):
    """The base of the interaction log's bodies: a plain pydantic model rather than ninja's
    Schema, whose validator wraps every object it reads for attribute access (a quarter of a
    batch's time), so that a batch validates straight from its JSON. Numbers must be
    finite."""

    model_config = ConfigDict(allow_inf_nan=False)


class LoggedMessageIn(LogInput):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str = Field(..., max_length=MESSAGE_MAX_CHARS)


class RetrievedItemIn(LogInput):
    text: str = Field("", max_length=MESSAGE_MAX_CHARS)
    title: str = Field("", max_length=500)
    source_uri: str = Field("", max_length=2000)
    document_id: (
        Annotated[int, Field(ge=0, le=2**63 - 1)] | Annotated[str, Field(max_length=200)] | None
    ) = None
    chunk_id: (
        Annotated[int, Field(ge=0, le=2**63 - 1)] | Annotated[str, Field(max_length=200)] | None
    ) = None
    score: float | None = None
    rank: int | None = Field(None, ge=1, le=INT4_MAX)


A_USER_MESSAGE: JsonDict = {
    "contains": {
        "type": "object",
        "properties": {"role": {"const": "user"}},
        "required": ["role"],
    }
}


class InteractionIn(LogInput):
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Your id for this interaction; sending it again stores nothing new.",
    )
    messages: list[LoggedMessageIn] = Field(
        ...,
        min_length=1,
        max_length=500,
        description="At least one user message.",
        json_schema_extra=A_USER_MESSAGE,
    )
    response: str = Field(..., max_length=MESSAGE_MAX_CHARS)
    model: str = Field("", max_length=300)
    retrieved: list[RetrievedItemIn] = Field(default_factory=list, max_length=100)
    latency_ms: int | None = Field(None, ge=0, le=86_400_000)
    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None
    session_id: str = Field("", max_length=200)
    end_user_id: str = Field("", max_length=200)
    metadata: Metadata = Field(default_factory=dict)
    created_at: Timestamp | None = None

    @model_validator(mode="after")
    def _has_a_user_message(self):
        if not any(message.role == "user" for message in self.messages):
            raise ValueError("messages must contain a user message")
        return self


class InteractionBatchIn(LogInput):
    """`{"interactions": [...]}`, or one interaction on its own, read as a batch of one (as
    ratings are) so that an error always names the field at fault (`interactions.0.response`).
    A plain pydantic model: ninja's Schema hands validators a wrapper, not the posted dict."""

    interactions: list[InteractionIn] = Field(..., min_length=1, max_length=1000)

    @model_validator(mode="before")
    @classmethod
    def _one_interaction_is_a_batch_of_one(cls, data):
        if isinstance(data, dict) and "interactions" not in data:
            return {"interactions": [data]}
        return data


# The fast path for a batch (flywheel.api.parser.body_validated_by): the same models refusing any
# field they do not name, validated by pydantic straight from the request's bytes. Whatever
# they accept, the parser's checks and the models above accept with the same values: the
# only values the parser refuses that a model would take are NUL characters (looked for in
# the bytes first), lone surrogates (which pydantic's JSON reader refuses) and what a body
# may hold in fields no model names (refused here). Any other body goes the ordinary way,
# which words its errors.
class _ExactLoggedMessage(LoggedMessageIn, extra="forbid"):
    pass


class _ExactRetrievedItem(RetrievedItemIn, extra="forbid"):
    pass


# Each field keeps its constraints (the base's FieldInfo) on the exact item type; mypy sees
# neither the FieldInfo nor the narrower list as what a model's annotation allows.
class _ExactInteraction(InteractionIn, extra="forbid"):
    messages: list[_ExactLoggedMessage] = InteractionIn.model_fields["messages"]  # type: ignore[assignment]
    retrieved: list[_ExactRetrievedItem] = InteractionIn.model_fields["retrieved"]  # type: ignore[assignment]


class _ExactInteractionBatch(LogInput, extra="forbid"):
    interactions: list[_ExactInteraction] = InteractionBatchIn.model_fields["interactions"]  # type: ignore[assignment]


def interaction_batch_from_json(body: bytes) -> _ExactInteractionBatch | None:
    """The batch in a `{"interactions": [...]}` body whose fields are all known and whose
    values all pass, validated straight from its JSON; None for any other body. Its
    `interactions` are InteractionIn, as an InteractionBatchIn's are: a view reads either
    alike."""
    if b"\\u0000" in body:
        return None
    try:
        return _ExactInteractionBatch.model_validate_json(body)
    except ValidationError:
        return None


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
    messages: StoredList
    query_text: str
    retrieved: StoredList
    response: str
    model_name: str
    model_version_id: int | None
    index_version_id: int | None
    latency_ms: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    metadata: StoredObject
    created_at: datetime
