"""Shadow mode: the candidate of a canary experiment answers, in a worker, questions the
control arm served, and its answer is stored beside the served one (ShadowAnswer) for offline
comparison and side-by-side review. The user never waits on it: the interaction's transaction
only stores the task in the outbox (flywheel.services.chat).

The candidate answers as its arm would have served the question: the same conversation, the
same retrieval options and generation parameters, the candidate's index version (or the active
one) and model version (or production), under the project's serving policy.
"""

import time
import uuid

from flywheel.generation import GenerationError, GenerationParameters
from flywheel.models import ExperimentArm, Interaction, ShadowAnswer, TrafficSplit
from flywheel.selectors.retrieval import RetrievalMode, RetrievalOptions
from flywheel.services.chat import (
    ChatRequest,
    chat_compose,
    chat_prepare_routed,
    retrieval_log_entries,
)
from flywheel.services.served_models import ChatRoute
from flywheel.services.traffic_splits import arm_versions


def _replayed_request(interaction: Interaction) -> ChatRequest:
    """The request the interaction was served for, as far as the log records it."""
    served = interaction.metadata.get("flywheel") or {}
    retrieval = served.get("retrieval") or {}
    generation = served.get("generation") or {}
    defaults = GenerationParameters()
    return ChatRequest(
        messages=interaction.messages,
        parameters=GenerationParameters(
            max_tokens=generation.get("max_tokens") or defaults.max_tokens,
            temperature=generation.get("temperature") or 0.0,
            top_p=generation.get("top_p"),
            stop=generation.get("stop") or [],
        ),
        rag=served.get("rag", True),
        retrieval=RetrievalOptions(
            top_k=retrieval.get("top_k") or RetrievalOptions.top_k,
            mode=RetrievalMode(retrieval.get("mode") or RetrievalMode.HYBRID),
            filters=retrieval.get("filters"),
            query_variants=retrieval.get("query_variants") or 0,
            hyde=bool(retrieval.get("hyde")),
        ),
    )


def shadow_answer_generate(*, interaction_id: uuid.UUID) -> ShadowAnswer | None:
    """The candidate's answer to the interaction's question, made and stored once (a repeated
    task finds it); None when the interaction or its experiment's split is gone. A candidate
    that fails to answer is stored with the error, as the comparison's evidence."""
    interaction = Interaction.objects.select_related("project").filter(pk=interaction_id).first()
    if interaction is None or interaction.experiment_id is None:
        return None
    stored = ShadowAnswer.objects.filter(
        interaction=interaction, experiment_id=interaction.experiment_id
    ).first()
    if stored is not None:
        return stored
    split = (
        TrafficSplit.objects.select_related(
            "project", "candidate_model_version", "candidate_index_version"
        )
        .filter(experiment_id=interaction.experiment_id)
        .first()
    )
    if split is None:
        return None
    versions = arm_versions(split=split, arm=ExperimentArm.CANDIDATE)
    route = ChatRoute(model_version=versions.model_version, index_version=versions.index_version)
    started = time.perf_counter()
    fields: dict
    try:
        prepared = chat_prepare_routed(
            project=interaction.project, request=_replayed_request(interaction), route=route
        )
        composed = chat_compose(prepared=prepared)
    except GenerationError as error:
        fields = {"index_version": versions.index_version, "error": str(error)[:2000]}
    else:
        retrieval = prepared.retrieval
        fields = {
            "index_version": retrieval.index_version if retrieval else None,
            "response": composed.generated.text,
            "answered_from": composed.answered_from,
            "retrieved": retrieval_log_entries(retrieval) or [],
            "prompt_tokens": composed.generated.prompt_tokens,
            "completion_tokens": composed.generated.completion_tokens,
        }
    fields["latency_ms"] = round((time.perf_counter() - started) * 1000)
    # Two deliveries of the task at once: the unique constraint keeps the first answer.
    shadow, _ = ShadowAnswer.objects.get_or_create(
        interaction=interaction,
        experiment_id=interaction.experiment_id,
        defaults={"model_version": versions.model_version, **fields},
    )
    return shadow
