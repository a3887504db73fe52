"""POST /v1/chat/completions — OpenAI-compatible, with RAG and an Interaction logged per call."""

import json
import time
from collections.abc import Iterator

from django.conf import settings
from django.http import JsonResponse, StreamingHttpResponse
from ninja import Router

from flywheel.api.auth import ApiKeyRequest, SecretKeyAuth
from flywheel.api.errors import ApiError
from flywheel.api.schemas import ChatCompletionIn, ErrorOut
from flywheel.generation import GenerationError, GenerationParameters
from flywheel.models import Interaction
from flywheel.services.chat import (
    ChatAnswer,
    ChatRequest,
    PreparedChat,
    chat_complete,
    chat_prepare,
    chat_stream,
    default_retrieval_options,
)
from flywheel.services.served_models import ModelNotFound

router = Router(tags=["chat"])
INTERACTION_HEADER = "X-Flywheel-Interaction-Id"


def _chat_request(payload: ChatCompletionIn) -> ChatRequest:
    options = payload.flywheel
    stop = [payload.stop] if isinstance(payload.stop, str) else list(payload.stop or [])
    retrieval = default_retrieval_options(
        mode=options.mode,
        filters=options.filters,
        query_variants=options.query_variants,
        hyde=options.hyde,
        **({"top_k": options.top_k} if options.top_k else {}),
    )
    return ChatRequest(
        model=payload.model,
        messages=[{"role": m.role, "content": m.text()} for m in payload.messages],
        parameters=GenerationParameters(
            max_tokens=payload.max_completion_tokens
            or payload.max_tokens
            or settings.FLYWHEEL_GENERATION_MAX_TOKENS,
            # Greedy unless asked: the small default model answers best without sampling.
            temperature=payload.temperature or 0.0,
            top_p=payload.top_p,
            stop=stop,
        ),
        rag=options.rag,
        retrieval=retrieval,
        end_user_id=payload.user or "",
        session_id=options.session_id,
        rater_id=options.rater_id,
        metadata={**options.metadata, **(payload.metadata or {})},
    )


def _unsupported_parameter(payload: ChatCompletionIn) -> tuple[str, str] | None:
    """The first parameter Flywheel would not honour, and why. Refused rather than passed to
    a remote backend that might honour it: every answer goes through retrieval, the verified
    answers and the serving policy, is logged as one text interaction and may become a
    training example, and none of that holds for tool calls, forced JSON or extra choices."""
    response_type = (payload.response_format or {}).get("type", "text")
    refusals = [
        ("n", payload.n > 1, "one choice is generated (and logged) per request"),
        ("tools", bool(payload.tools), "answers come from the knowledge base; no tool is called"),
        ("tool_choice", payload.tool_choice not in (None, "none"), "no tool is called"),
        ("functions", bool(payload.functions), "no function is called"),
        ("function_call", payload.function_call not in (None, "none"), "no function is called"),
        (
            "response_format",
            response_type != "text",
            f"answers are text; '{response_type}' output cannot be enforced",
        ),
        ("logprobs", bool(payload.logprobs), "log probabilities are not returned"),
        ("top_logprobs", bool(payload.top_logprobs), "log probabilities are not returned"),
    ]
    for name, used, why in refusals:
        if used:
            return name, why
    return None


def _verified_answer_citation(interaction: Interaction) -> dict | None:
    """A verified answer is cited as the review that approved it and the passages it rests
    on."""
    verified = interaction.verified_answer
    if verified is None or interaction.answered_from != Interaction.AnsweredFrom.VERIFIED_ANSWER:
        return None
    match = interaction.metadata.get("flywheel", {}).get("verified_match", {})
    return {
        "id": verified.pk,
        "review_id": verified.review_id,
        "question": verified.question,
        "similarity": match.get("similarity"),
        "evidence": [
            {key: passage.get(key) for key in ("document_id", "title", "source_uri", "heading")}
            for passage in verified.evidence
        ],
    }


def _extension(prepared: PreparedChat, answer: ChatAnswer) -> dict:
    retrieval = prepared.retrieval
    return {
        "answered_from": answer.interaction.answered_from,
        "verified_answer": _verified_answer_citation(answer.interaction),
        "interaction_id": str(prepared.interaction_id),
        "model_version": {"id": prepared.model_version.pk, "name": prepared.model_version.name},
        "experiment": (
            {
                "id": prepared.split.experiment_id,
                "arm": prepared.assignment.arm,
                "assignment_unit": prepared.assignment.unit,
            }
            if prepared.split is not None and prepared.assignment is not None
            else None
        ),
        "index_version": (
            {"id": retrieval.index_version.pk, "number": retrieval.index_version.number}
            if retrieval and retrieval.index_version
            else None
        ),
        "citations": [
            {
                "rank": chunk.rank,
                "chunk_id": chunk.chunk_id,
                "document_id": chunk.document_id,
                "title": chunk.title,
                "source_uri": chunk.source_uri,
                "heading": chunk.heading,
                "score": round(chunk.score, 6),
            }
            for chunk in (retrieval.chunks if retrieval else [])
        ],
    }


def _completion_id(prepared: PreparedChat) -> str:
    return f"chatcmpl-{prepared.interaction_id.hex}"


def _usage(answer: ChatAnswer) -> dict:
    generated = answer.generated
    return {
        "prompt_tokens": generated.prompt_tokens,
        "completion_tokens": generated.completion_tokens,
        "total_tokens": generated.prompt_tokens + generated.completion_tokens,
    }


def _sse(event: dict) -> str:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n"


def _stream_events(prepared: PreparedChat, *, include_usage: bool) -> Iterator[str]:
    created = int(time.time())
    base = {
        "id": _completion_id(prepared),
        "object": "chat.completion.chunk",
        "created": created,
        "model": prepared.backend.model_name,
    }
    yield _sse(
        base
        | {
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ]
        }
    )
    try:
        for item in chat_stream(prepared=prepared):
            if isinstance(item, ChatAnswer):
                final = {"index": 0, "delta": {}, "finish_reason": item.generated.finish_reason}
                yield _sse(base | {"choices": [final], "flywheel": _extension(prepared, item)})
                if include_usage:
                    yield _sse(base | {"choices": [], "usage": _usage(item)})
            else:
                delta = {"index": 0, "delta": {"content": item}, "finish_reason": None}
                yield _sse(base | {"choices": [delta]})
    except GenerationError as error:
        # Headers are gone already: the error travels in the stream, as OpenAI's does.
        yield _sse(
            {
                "error": {
                    "message": str(error),
                    "type": "upstream_error",
                    "code": "generation_failed",
                    "param": None,
                }
            }
        )
    yield "data: [DONE]\n\n"


@router.post(
    "/chat/completions",
    auth=SecretKeyAuth(scope="chat"),
    response={
        200: dict,
        400: ErrorOut,
        401: ErrorOut,
        403: ErrorOut,
        404: ErrorOut,
        413: ErrorOut,
        502: ErrorOut,
    },
    summary="Create a chat completion (OpenAI-compatible, with RAG)",
)
def chat_completions(request: ApiKeyRequest, payload: ChatCompletionIn):
    """Answers with retrieval-augmented generation by the model `model` names: `flywheel`,
    the project's production model version; `flywheel:candidate`, the newest candidate; or a
    model version by its name (`GET /v1/models` lists them). Any other name is 404
    `model_not_found`. `n` > 1, `tools`, `tool_choice`, `functions`, `function_call`,
    `response_format` other than text, `logprobs` and `top_logprobs` are 400
    `unsupported_parameter`, naming the parameter in `param`.

    Every call is logged as an Interaction. Its id comes back in `flywheel.interaction_id`, in
    the `X-Flywheel-Interaction-Id` header and in the response `id`: `chatcmpl-` followed by
    the interaction id's 32 hex digits. `flywheel.citations` lists the retrieved passages;
    `flywheel.answered_from` says how the answer was made (`generated`, `verified_answer` —
    then `flywheel.verified_answer` cites the approving review and the passages it rests on —
    or `quote`). With `stream: true` the answer arrives as server-sent events.

    While a canary experiment runs, `flywheel` is answered by the arm the person is assigned
    (`control` or `candidate`, named in `flywheel.experiment`), drawn from `user`, else
    `flywheel.rater_id`, else `flywheel.session_id`, so that one person keeps one arm; a
    request naming none is assigned at random (`assignment_unit` `random`). Naming a model
    version, or an arm (`flywheel:arm:control`, `flywheel:arm:candidate`), bypasses the
    assignment and is not counted in the experiment.
    """
    if (unsupported := _unsupported_parameter(payload)) is not None:
        name, why = unsupported
        raise ApiError(
            400, f"'{name}' is not supported: {why}.", code="unsupported_parameter", param=name
        )
    project = request.api_key.project
    try:
        prepared = chat_prepare(project=project, request=_chat_request(payload))
    except ModelNotFound as error:
        raise ApiError(404, str(error), code="model_not_found", param="model") from error
    except GenerationError as error:
        raise ApiError(502, str(error), code="generation_failed") from error

    if payload.stream:
        include_usage = bool(payload.stream_options and payload.stream_options.include_usage)
        stream = StreamingHttpResponse(
            _stream_events(prepared, include_usage=include_usage),
            content_type="text/event-stream",
        )
        stream["Cache-Control"] = "no-cache"
        stream["X-Accel-Buffering"] = "no"  # tell proxies not to hold the stream back
        stream[INTERACTION_HEADER] = str(prepared.interaction_id)
        return stream

    try:
        answer = chat_complete(prepared=prepared)
    except GenerationError as error:
        raise ApiError(502, str(error), code="generation_failed") from error
    body = {
        "id": _completion_id(prepared),
        "object": "chat.completion",
        "created": int(answer.interaction.created_at.timestamp()),
        "model": prepared.backend.model_name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.generated.text},
                "finish_reason": answer.generated.finish_reason,
            }
        ],
        "usage": _usage(answer),
        "flywheel": _extension(prepared, answer),
    }
    response = JsonResponse(body)
    response[INTERACTION_HEADER] = str(prepared.interaction_id)
    return response
