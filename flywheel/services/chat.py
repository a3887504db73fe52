"""Answer a conversation: retrieve from the active index, then answer as the project's serving
policy says (a verified answer when the question matches one, a quote of the passages, or the
production model version's generation), and log the whole exchange as an Interaction.

While a canary experiment runs, a request for the production model is served by the arm its
person is assigned (flywheel.services.traffic_splits); the interaction records the experiment,
the arm and what assigned it, a failure inside an arm is counted, and a sample of control
interactions is answered again by the candidate in the background (shadow mode)."""

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction

from flywheel.generation import Backend, GenerationError, GenerationParameters, backend_for
from flywheel.grounding import groundedness, quote_answer
from flywheel.messages import last_user_message
from flywheel.ml.loading import GeneratedText, embed_texts
from flywheel.models import (
    Chunk,
    ExperimentArm,
    Interaction,
    ModelVersion,
    Project,
    ServingPolicy,
    TrafficSplit,
    VerifiedAnswer,
)
from flywheel.selectors.retrieval import RetrievalOptions, RetrievalResult, retrieve
from flywheel.services.indexing import passage_for_embedding
from flywheel.services.interactions import interaction_record
from flywheel.services.outbox import outbox_enqueue
from flywheel.services.served_models import PRODUCTION_MODEL, ChatRoute, chat_route
from flywheel.services.traffic_splits import (
    ArmAssignment,
    serving_failure_record,
    shadow_sampled,
)
from flywheel.services.verified_answers import (
    VerifiedMatch,
    retriever_path,
    serving_policy_get,
    verified_answer_match,
)

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful support assistant. Answer the user's question using the numbered "
    "context passages below. Be brief. If the passages do not contain the answer, say that "
    "you do not know."
)
# The small default model reads a few passages well and many badly.
CONTEXT_CHARACTER_BUDGET = 4000
SHADOW_ANSWER_TASK = "flywheel.tasks.shadow.shadow_answer_generate"


@dataclass
class ChatRequest:
    messages: list[dict]
    parameters: GenerationParameters
    # A name the project serves (see flywheel.services.served_models); ModelNotFound otherwise.
    model: str = PRODUCTION_MODEL
    rag: bool = True
    retrieval: RetrievalOptions = field(default_factory=RetrievalOptions)
    end_user_id: str = ""
    session_id: str = ""
    # The app's id for the person rating answers (the widget's rater id); with the end user
    # and the session, what keeps a person in one experiment arm. Not stored.
    rater_id: str = ""
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
    policy: ServingPolicy
    # A verified answer that matched the question; served as it is in verbatim mode.
    verified_match: VerifiedMatch | None = None
    # The experiment's split and the arm it assigned, when an experiment serves the request.
    split: TrafficSplit | None = None
    assignment: ArmAssignment | None = None

    @property
    def serves_verified_answer(self) -> bool:
        return (
            self.verified_match is not None
            and self.policy.verified_answers == ServingPolicy.VerifiedAnswersMode.VERBATIM
        )

    def passage_texts(self) -> list[str]:
        """The retrieved document passages under their title and heading path, which the
        quote finder reads as headings of the sentences below them."""
        return [
            passage_for_embedding(title=chunk.title, heading=chunk.heading, text=chunk.text)
            for chunk in (self.retrieval.chunks if self.retrieval else [])
            if chunk.kind == Chunk.Kind.DOCUMENT
        ]


@dataclass
class ChatAnswer:
    interaction: Interaction
    generated: GeneratedText


@dataclass
class ComposedAnswer:
    """An answer as the serving policy made it, before it is logged."""

    generated: GeneratedText
    answered_from: str
    grounding: dict | None
    answer_ms: float


def context_block(passages: list[dict]) -> str:
    """The numbered passages, as the model reads them. `passages` are retrieval log entries
    (rank, title, heading, text), so a logged interaction rebuilds exactly what was served."""
    parts: list[str] = []
    used = 0
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
    """Decide what answers the request (ModelNotFound for a name the project does not serve)
    and retrieve its passages."""
    started = time.perf_counter()
    route = chat_route(
        project=project,
        name=request.model,
        user=request.end_user_id,
        rater_id=request.rater_id,
        session_id=request.session_id,
    )
    try:
        return chat_prepare_routed(project=project, request=request, route=route, started=started)
    except GenerationError as error:
        _failure_count(route.split, route.assignment, error)
        raise


def _failure_count(
    split: TrafficSplit | None, assignment: ArmAssignment | None, error: GenerationError
) -> None:
    if split is not None and assignment is not None:
        serving_failure_record(split=split, arm=assignment.arm, error=error)


def chat_prepare_routed(
    *, project: Project, request: ChatRequest, route: ChatRoute, started: float | None = None
) -> PreparedChat:
    """Prepare the request for the model and index versions of `route`."""
    started = time.perf_counter() if started is None else started
    model_version = route.model_version
    backend = backend_for(project=project, model_version=model_version)
    policy = serving_policy_get(project=project)
    query = last_user_message(request.messages)
    retrieval = None
    verified_match = None
    timings: dict[str, float] = {}
    if request.rag and query:
        retrieval = retrieve(
            project=project,
            query=query,
            options=request.retrieval,
            index_version=route.index_version,
            write_text=backend.write,
        )
        timings.update(retrieval.timings_ms)
        if (
            retrieval.index_version is not None
            and retrieval.query_embedding is not None
            and policy.verified_answers != ServingPolicy.VerifiedAnswersMode.OFF
        ):
            started_match = time.perf_counter()
            verified_match = verified_answer_match(
                project=project,
                query_embedding=retrieval.query_embedding,
                embedding_model=retriever_path(index_version=retrieval.index_version),
                chunks=retrieval.chunks,
                policy=policy,
            )
            timings["verified_match_ms"] = (time.perf_counter() - started_match) * 1000
    passages = retrieval_log_entries(retrieval)
    if (
        verified_match is not None
        and passages is not None
        and policy.verified_answers == ServingPolicy.VerifiedAnswersMode.FIRST_PASSAGE
    ):
        passages = [verified_answer_passage(verified_match.verified_answer), *passages]
    prompt = prompt_messages_build(project=project, messages=request.messages, passages=passages)
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
        policy=policy,
        verified_match=verified_match,
        split=route.split,
        assignment=route.assignment,
    )


def verified_answer_passage(verified: VerifiedAnswer) -> dict:
    """A verified answer as the first passage the generator reads."""
    return {
        "rank": 1,
        "kind": "verified_answer",
        "title": "Verified answer",
        "heading": verified.question,
        "text": verified.answer,
    }


def _record(
    prepared: PreparedChat,
    generated: GeneratedText,
    generate_ms: float,
    *,
    answered_from: str,
    grounding: dict | None = None,
) -> Interaction:
    retrieval = prepared.retrieval
    if retrieval is not None:
        query_embedding = retrieval.query_embedding
    elif prepared.query:
        query_embedding = embed_texts([prepared.query])[0]
    else:
        query_embedding = None
    index_version = retrieval.index_version if retrieval else None
    options = prepared.request.retrieval
    parameters = prepared.request.parameters
    metadata = dict(prepared.request.metadata)
    metadata["flywheel"] = {
        "timings_ms": {
            key: round(value, 1)
            for key, value in (prepared.timings_ms | {"generate_ms": generate_ms}).items()
        },
        "rag": prepared.request.rag,
        "retrieval": {
            "mode": options.mode.value,
            "top_k": options.top_k,
            "filters": options.filters,
            "query_variants": options.query_variants,
            "hyde": options.hyde,
            "queries": retrieval.queries if retrieval else [],
            "hypothetical_answer": retrieval.hypothetical_answer if retrieval else None,
        },
        # What the model was asked for, so that a shadow answer can be asked the same.
        "generation": {
            "max_tokens": parameters.max_tokens,
            "temperature": parameters.temperature,
            "top_p": parameters.top_p,
            "stop": parameters.stop,
        },
        "finish_reason": generated.finish_reason,
    }
    match = prepared.verified_match
    if match is not None:
        metadata["flywheel"]["verified_match"] = {
            "verified_answer_id": match.verified_answer.pk,
            "similarity": round(match.similarity, 4),
            "threshold": round(match.threshold, 4),
            "evidence_rank": match.evidence_rank,
            "mode": prepared.policy.verified_answers,
        }
    if grounding is not None:
        metadata["flywheel"]["grounding"] = grounding
    assignment = prepared.assignment
    with transaction.atomic():
        interaction = interaction_record(
            interaction_id=prepared.interaction_id,
            project=prepared.project,
            source=Interaction.Source.CHAT,
            messages=prepared.request.messages,
            query_text=prepared.query,
            query_embedding=query_embedding,
            retrieved=retrieval_log_entries(retrieval) or [],
            response=generated.text,
            answered_from=answered_from,
            verified_answer=match.verified_answer if match is not None else None,
            model_version=prepared.model_version,
            model_name=prepared.backend.model_name,
            index_version=index_version,
            latency_ms=round((time.perf_counter() - prepared.started) * 1000),
            prompt_tokens=generated.prompt_tokens,
            completion_tokens=generated.completion_tokens,
            session_id=prepared.request.session_id,
            end_user_id=prepared.request.end_user_id,
            metadata=metadata,
            experiment_id=prepared.split.experiment_id if prepared.split is not None else None,
            experiment_arm=assignment.arm if assignment is not None else "",
            assignment_unit=assignment.unit if assignment is not None else "",
        )
        if _shadow_answer_wanted(prepared, interaction):
            # With the interaction or not at all; the candidate answers it in a worker.
            outbox_enqueue(task_name=SHADOW_ANSWER_TASK, args=[str(interaction.pk)])
    return interaction


def _shadow_answer_wanted(prepared: PreparedChat, interaction: Interaction) -> bool:
    """Whether the candidate should also answer this interaction: a sampled control one."""
    split, assignment = prepared.split, prepared.assignment
    return (
        split is not None
        and assignment is not None
        and assignment.arm == ExperimentArm.CONTROL
        and shadow_sampled(split=split, interaction_id=interaction.pk)
    )


def _fixed_answer(text: str) -> GeneratedText:
    """An answer no model wrote (a verified answer, a quote): no tokens were spent on it."""
    return GeneratedText(text=text, prompt_tokens=0, completion_tokens=0, finish_reason="stop")


def _quote(prepared: PreparedChat) -> str | None:
    passages = prepared.passage_texts()
    if not passages or not prepared.query:
        return None
    model = retriever_path(
        index_version=prepared.retrieval.index_version if prepared.retrieval else None
    )
    quoted = quote_answer(
        question=prepared.query,
        passages=passages,
        embed=lambda texts: embed_texts(texts, path=Path(model)),
    )
    return quoted.text if quoted else None


def chat_compose(*, prepared: PreparedChat) -> ComposedAnswer:
    """Answer as the serving policy says, running the model only when it is needed."""
    started = time.perf_counter()
    if prepared.serves_verified_answer:
        assert prepared.verified_match is not None
        generated = _fixed_answer(prepared.verified_match.verified_answer.answer)
        answered_from, grounding = Interaction.AnsweredFrom.VERIFIED_ANSWER, None
    elif prepared.policy.answer_mode == ServingPolicy.AnswerMode.QUOTE and (
        quoted := _quote(prepared)
    ):
        generated = _fixed_answer(quoted)
        answered_from, grounding = Interaction.AnsweredFrom.QUOTE, None
    else:
        generated = prepared.backend.generate(prepared.prompt_messages, prepared.request.parameters)
        answered_from, grounding = Interaction.AnsweredFrom.GENERATED, None
        passages = prepared.passage_texts()
        if prepared.policy.answer_mode == ServingPolicy.AnswerMode.GROUNDED and passages:
            score = groundedness(answer=generated.text, passages=passages)
            grounding = {"groundedness": round(score, 3), "generated": generated.text}
            if score < prepared.policy.groundedness_threshold and (quoted := _quote(prepared)):
                generated = _fixed_answer(quoted)
                answered_from = Interaction.AnsweredFrom.QUOTE
    return ComposedAnswer(
        generated=generated,
        answered_from=answered_from,
        grounding=grounding,
        answer_ms=(time.perf_counter() - started) * 1000,
    )


def chat_complete(*, prepared: PreparedChat) -> ChatAnswer:
    try:
        composed = chat_compose(prepared=prepared)
    except GenerationError as error:
        _failure_count(prepared.split, prepared.assignment, error)
        raise
    interaction = _record(
        prepared,
        composed.generated,
        composed.answer_ms,
        answered_from=composed.answered_from,
        grounding=composed.grounding,
    )
    return ChatAnswer(interaction=interaction, generated=composed.generated)


def _streams_generation(prepared: PreparedChat) -> bool:
    """Whether the answer can be streamed token by token as the model writes it: not when it
    is fixed (a verified answer, a quote) or must be checked for grounding first."""
    return not prepared.serves_verified_answer and prepared.policy.answer_mode == (
        ServingPolicy.AnswerMode.GENERATE
    )


def chat_stream(*, prepared: PreparedChat) -> Iterator[str | ChatAnswer]:
    """Text pieces, then the ChatAnswer once the interaction is logged."""
    if not _streams_generation(prepared):
        answer = chat_complete(prepared=prepared)
        yield answer.generated.text
        yield answer
        return
    started = time.perf_counter()
    pieces = prepared.backend.stream(prepared.prompt_messages, prepared.request.parameters)
    while True:
        try:
            piece = next(pieces)
        except GenerationError as error:
            _failure_count(prepared.split, prepared.assignment, error)
            raise
        if isinstance(piece, GeneratedText):
            generate_ms = (time.perf_counter() - started) * 1000
            interaction = _record(
                prepared, piece, generate_ms, answered_from=Interaction.AnsweredFrom.GENERATED
            )
            yield ChatAnswer(interaction=interaction, generated=piece)
            return
        yield piece


def default_retrieval_options(**overrides) -> RetrievalOptions:
    return RetrievalOptions(**({"top_k": settings.FLYWHEEL_RETRIEVAL_TOP_K} | overrides))
