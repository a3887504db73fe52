import uuid
from datetime import datetime
from typing import Annotated, Literal

from ninja import Field, Schema
from pydantic import BaseModel, ConfigDict, model_validator

from flywheel.api.schemas import InputSchema

# What the "says something" rule below means, stated for generated clients and fuzzers.
AT_LEAST_ONE_SIGNAL = {
    "anyOf": [
        {"required": ["thumb"], "properties": {"thumb": {"enum": ["up", "down"]}}},
        {"required": ["score"], "properties": {"score": {"type": "integer"}}},
        {"required": ["comment"], "properties": {"comment": {"type": "string", "pattern": r"\S"}}},
        {
            "required": ["correction"],
            "properties": {"correction": {"type": "string", "pattern": r"\S"}},
        },
    ]
}


class RatingIn(InputSchema):
    """At least one of thumb, score, comment or correction."""

    model_config = ConfigDict(json_schema_extra=AT_LEAST_ONE_SIGNAL)

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

    model_config = ConfigDict(allow_inf_nan=False)

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


class ReviewRevisionIn(InputSchema):
    decision: Literal["approved", "rejected", "corrected"]
    ideal_answer: str = Field(
        "", max_length=20_000, description="The ideal answer; required when `corrected`"
    )
    note: str | None = Field(
        None,
        max_length=5000,
        description="The reviewer's note; leave it out to keep the current one",
    )


class ReviewRevisionOut(Schema):
    number: int
    decision: str
    ideal_answer: str
    note: str
    author: str = Field(..., description="The user's name, or the API key's name and prefix")
    created_at: datetime


class ReviewOut(Schema):
    id: int
    interaction_id: uuid.UUID
    reviewer: str = Field(..., description="Who submitted the review")
    decision: str
    ideal_answer: str
    note: str
    created_at: datetime
    updated_at: datetime
    revisions: list[ReviewRevisionOut] = Field(..., description="Oldest first; 1 is as submitted")


class ReviewListOut(Schema):
    reviews: list[ReviewOut]
