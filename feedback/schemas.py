import uuid
from datetime import datetime
from typing import Annotated, Literal

from ninja import Field, Schema
from pydantic import BaseModel, model_validator


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
        None, min_length=1, max_length=200,
        description="Your id for this interaction; sending it again stores nothing new.",
    )  # fmt: skip
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


class RatingIn(Schema):
    interaction_id: uuid.UUID
    rater_id: str = Field(
        ..., min_length=1, max_length=200, description="Your app's id for the end user"
    )
    thumb: Literal["up", "down"] | None = None
    score: int | None = Field(None, ge=1, le=5)
    comment: str = Field("", max_length=5000)
    correction: str = Field("", max_length=20_000, description="A better answer")
    tags: list[Annotated[str, Field(min_length=1, max_length=50)]] = Field(
        default_factory=list, max_length=20
    )

    @model_validator(mode="after")
    def _says_something(self):
        if not (self.thumb or self.score or self.comment.strip() or self.correction.strip()):
            raise ValueError("a rating needs a thumb, a score, a comment or a correction")
        return self


class RatingBatchIn(BaseModel):
    """`{"ratings": [...]}`, or one rating on its own, which is read as a batch of one so that
    an error always names the field at fault (`ratings.0.thumb`). A plain pydantic model:
    ninja's Schema hands validators a wrapper rather than the posted dict."""

    ratings: list[RatingIn] = Field(..., min_length=1, max_length=500)

    @model_validator(mode="before")
    @classmethod
    def _one_rating_is_a_batch_of_one(cls, data):
        if isinstance(data, dict) and "ratings" not in data:
            return {"ratings": [data]}
        return data


class RatingOut(Schema):
    id: int
    interaction_id: uuid.UUID
    rater_id: str
    thumb: str
    score: int | None
    source: str


class RatingBatchOut(Schema):
    ratings: list[RatingOut]
