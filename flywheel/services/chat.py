"""Answer a conversation: retrieve from the active index, prompt the production model version,
and log the whole exchange as an Interaction."""

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings

from flywheel.generation import Backend, GenerationParameters, backend_for
from flywheel.messages import last_user_message
from flywheel.ml.loading import GeneratedText, embed_texts
from flywheel.models import Interaction, ModelVersion, Project
from flywheel.selectors.retrieval import RetrievalOptions, RetrievalResult, retrieve
from flywheel.services.interactions import interaction_record
from flywheel.services.model_versions import model_version_production_ensure

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful support assistant. Answer the user's question using the numbered "
    "context passages below. Be brief. If the passages do not contain the answer, say that "
    "you do not know."
)
# The small default model reads a few passages well and many badly.
CONTEXT_CHARACTER_BUDGET = 4000


@dataclass
class ChatRequest:
    messages: list[dict]
    parameters: GenerationParameters
    rag: bool = True
    retrieval: RetrievalOptions = field(default_factory=RetrievalOptions)
    end_user_id: str = ""
    session_id: str = ""
    metadata: dict = field(default_factory=dict)


@dataclass
class PreparedChat:
    """Everything decided before the first token: the Interaction id is known here, so a
    streaming response can announce it in its headers."""

    project: Project
    request: ChatRequest
    interaction_id: uuid.UUID
    model_version: ModelVersion
    backend: Backend
    query: str
    retrieval: RetrievalResult | None
    prompt_messages: list[dict]
    started: float
    timings_ms: dict[str, float]


@dataclass
class ChatAnswer:
    interaction: Interaction
    generated: GeneratedText


def context_block(passages: list[dict]) -> str:
    """The numbered passages, as the model reads them. `passages` are retrieval log entries
    (rank, title, heading, text), so a logged interaction rebuilds exactly what was served."""
    parts, used = [], 0
    for passage in passages:
        heading = f" — {passage['heading']}" if passage.get("heading") else ""
        text = f"[{passage.get('rank') or len(parts) + 1}] {passage.get('title', '')}{heading}\n"
        text += passage.get("text", "")
        if parts and used + len(text) > CONTEXT_CHARACTER_BUDGET:
            break
        parts.append(text)
        used += len(text)
    return "\n\n".join(parts)


def prompt_messages_build(
    *, project: Project, messages: list[dict], passages: list[dict] | None
) -> list[dict]:
    """The messages the model sees: our system prompt, the app's own system messages, then
    the retrieved context (None: retrieval was off), then the conversation.

    Curation builds training examples with this same function, so training matches serving.
    """
    own_system = [m["content"] for m in messages if m["role"] in ("system", "developer")]
    conversation = [m for m in messages if m["role"] not in ("system", "developer")]
    system_parts = [project.system_prompt or DEFAULT_SYSTEM_PROMPT, *own_system]
    if passages is not None:
        context = context_block(passages)
        system_parts.append(f"Context:\n{context}" if context else "Context: (nothing found)")
    return [{"role": "system", "content": "\n\n".join(system_parts)}, *conversation]


def retrieval_log_entries(retrieval: RetrievalResult | None) -> list[dict] | None:
    if retrieval is None:
        return None
    if retrieval.index_version is None:
        return []
    return [
        chunk.as_log_entry(index_version_id=retrieval.index_version.pk)
        for chunk in retrieval.chunks
    ]


def chat_prepare(*, project: Project, request: ChatRequest) -> PreparedChat:
    started = time.perf_counter()
    model_version = model_version_production_ensure(project=project)
    backend = backend_for(project=project, model_version=model_version)
    query = last_user_message(request.messages)
    retrieval = None
    timings: dict[str, float] = {}
    if request.rag and query:
        retrieval = retrieve(
            project=project, query=query, options=request.retrieval, write_text=backend.write
        )
        timings.update(retrieval.timings_ms)
    prompt = prompt_messages_build(
        project=project, messages=request.messages, passages=retrieval_log_entries(retrieval)
    )
    return PreparedChat(
        project=project,
        request=request,
        interaction_id=uuid.uuid4(),
        model_version=model_version,
        backend=backend,
        query=query,
        retrieval=retrieval,
        prompt_messages=prompt,
        started=started,
        timings_ms=timings,
    )


def _record(prepared: PreparedChat, generated: GeneratedText, generate_ms: float) -> Interaction:
    retrieval = prepared.retrieval
    if retrieval is not None:
        query_embedding = retrieval.query_embedding
    elif prepared.query:
        query_embedding = embed_texts([prepared.query])[0]
    else:
        query_embedding = None
    index_version = retrieval.index_version if retrieval else None
    options = prepared.request.retrieval
    metadata = dict(prepared.request.metadata)
    metadata["flywheel"] = {
        "timings_ms": {key: round(value, 1) for key, value in
                       (prepared.timings_ms | {"generate_ms": generate_ms}).items()},
        "rag": prepared.request.rag,
        "retrieval": {
            "mode": options.mode.value, "top_k": options.top_k, "filters": options.filters,
            "query_variants": options.query_variants, "hyde": options.hyde,
            "queries": retrieval.queries if retrieval else [],
            "hypothetical_answer": retrieval.hypothetical_answer if retrieval else None,
        },
        "finish_reason": generated.finish_reason,
    }  # fmt: skip
    return interaction_record(
        interaction_id=prepared.interaction_id,
        project=prepared.project,
        source=Interaction.Source.CHAT,
        messages=prepared.request.messages,
        query_text=prepared.query,
        query_embedding=query_embedding,
        retrieved=retrieval_log_entries(retrieval) or [],
        response=generated.text,
        model_version=prepared.model_version,
        model_name=prepared.backend.model_name,
        index_version=index_version,
        latency_ms=round((time.perf_counter() - prepared.started) * 1000),
        prompt_tokens=generated.prompt_tokens,
        completion_tokens=generated.completion_tokens,
        session_id=prepared.request.session_id,
        end_user_id=prepared.request.end_user_id,
        metadata=metadata,
    )


def chat_complete(*, prepared: PreparedChat) -> ChatAnswer:
    started = time.perf_counter()
    generated = prepared.backend.generate(prepared.prompt_messages, prepared.request.parameters)
    generate_ms = (time.perf_counter() - started) * 1000
    return ChatAnswer(interaction=_record(prepared, generated, generate_ms), generated=generated)


def chat_stream(*, prepared: PreparedChat) -> Iterator[str | ChatAnswer]:
    """Text pieces, then the ChatAnswer once the interaction is logged."""
    started = time.perf_counter()
    for piece in prepared.backend.stream(prepared.prompt_messages, prepared.request.parameters):
        if isinstance(piece, GeneratedText):
            generate_ms = (time.perf_counter() - started) * 1000
            yield ChatAnswer(interaction=_record(prepared, piece, generate_ms), generated=piece)
            return
        yield piece


def default_retrieval_options(**overrides) -> RetrievalOptions:
    return RetrievalOptions(**({"top_k": settings.FLYWHEEL_RETRIEVAL_TOP_K} | overrides))
