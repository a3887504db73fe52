"""POST /v1/embeddings — OpenAI-compatible, with the project's retriever: the embedding model
of its active index version, so that a client's vectors compare with the index's."""

import base64
from typing import Annotated, Any, Literal

import numpy as np
from django.http import JsonResponse
from ninja import Field, Router
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from flywheel.api.auth import ApiKeyRequest, SecretKeyAuth
from flywheel.api.errors import ApiError
from flywheel.api.schemas import ErrorOut, InputSchema
from flywheel.ml.loading import EMBEDDING_DIMENSIONS
from flywheel.services.embeddings import embeddings_create
from flywheel.services.served_models import ModelNotFound

router = Router(tags=["embeddings"])

# OpenAI's own limit on inputs per request, which clients batch by (LangChain's
# OpenAIEmbeddings sends up to 1000). The model reads 256 word pieces of each text at most;
# the rest of a longer text is cut off, as sentence-transformers does.
EMBEDDING_MAX_INPUTS = 2048
EMBEDDING_INPUT_MAX_CHARS = 32_768

EmbeddingText = Annotated[str, Field(min_length=1, max_length=EMBEDDING_INPUT_MAX_CHARS)]


def _text_not_tokens(value: Any) -> Any:
    """Token ids are refused with a reason: they would be ids of OpenAI's tokenizer, which
    this model does not share."""
    items = value if isinstance(value, list) else [value]
    if any(isinstance(item, int | list) for item in items):
        raise PydanticCustomError(
            "text_required",
            "token arrays are not accepted (this model's tokenizer is not OpenAI's): send text",
        )
    return value


class EmbeddingsIn(InputSchema):
    model: str = Field(
        ...,
        max_length=200,
        description="`flywheel:embedding` or the retriever's name (GET /v1/models lists it); "
        "any other is 404 `model_not_found`.",
    )
    input: Annotated[
        EmbeddingText
        | Annotated[list[EmbeddingText], Field(min_length=1, max_length=EMBEDDING_MAX_INPUTS)],
        BeforeValidator(_text_not_tokens),
    ] = Field(
        ...,
        description=f"A text or a list of 1 to {EMBEDDING_MAX_INPUTS} texts, each of 1 to "
        f"{EMBEDDING_INPUT_MAX_CHARS} characters; the model reads the first 256 word pieces "
        "of each.",
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float",
        description="`base64`: each vector as little-endian float32 bytes in base64, as OpenAI.",
    )
    dimensions: int | None = Field(
        None,
        ge=1,
        le=EMBEDDING_DIMENSIONS,
        description=f"Only {EMBEDDING_DIMENSIONS}: the vectors cannot be shortened.",
    )
    user: str | None = Field(None, max_length=200)


def _encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


@router.post(
    "/embeddings",
    auth=SecretKeyAuth(scope="chat"),
    response={200: dict, 400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 413: ErrorOut},
    summary="Create embeddings (OpenAI-compatible)",
)
def embeddings(request: ApiKeyRequest, payload: EmbeddingsIn):
    """Embeds each text with the retriever of the project's active index version (the one
    retrieval embeds questions with): unit-length vectors of 384 floats, in the order of
    `input`. `usage.prompt_tokens` counts the word pieces the model read. `model` in the
    response names the retriever that answered."""
    if payload.dimensions is not None and payload.dimensions != EMBEDDING_DIMENSIONS:
        raise ApiError(
            400,
            f"'dimensions' is not supported: the vectors have {EMBEDDING_DIMENSIONS} "
            "dimensions and cannot be shortened.",
            code="unsupported_parameter",
            param="dimensions",
        )
    texts = [payload.input] if isinstance(payload.input, str) else payload.input
    try:
        embedded = embeddings_create(
            project=request.api_key.project, model=payload.model, texts=texts
        )
    except ModelNotFound as error:
        raise ApiError(404, str(error), code="model_not_found", param="model") from error
    return JsonResponse(
        {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": _encoded(vector, payload.encoding_format),
                }
                for index, vector in enumerate(embedded.vectors)
            ],
            "model": embedded.model,
            "usage": {
                "prompt_tokens": embedded.prompt_tokens,
                "total_tokens": embedded.prompt_tokens,
            },
        }
    )
