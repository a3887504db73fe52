"""The questions an evaluation asks, each prompted exactly as serving would prompt it now: by
the serving prompt builder, with the project's current system prompt and retrieved passages.

A held-out example of the dataset keeps the context its interaction was served with (its own
retrieval, which the answer was rated against), rebuilt into today's prompt; a golden-set
question is retrieved for live, against the index version serving reads.
"""

from dataclasses import dataclass

from flywheel.models import IndexVersion, Project
from flywheel.selectors.retrieval import retrieve
from flywheel.services.chat import (
    default_retrieval_options,
    prompt_messages_build,
    retrieval_log_entries,
)
from retrain.curation.examples import _served_passages as served_passages
from retrain.models import DatasetRecord

SYSTEM_ROLES = ("system", "developer")


@dataclass(frozen=True)
class EvaluationQuestion:
    """One question both models answer. `prompt` and `chosen` (the reference answer) are named
    as on a DatasetRecord, which metrics.evaluate_model also reads."""

    suite: str
    question: str
    prompt: list[dict]
    chosen: str
    # The source of each passage in the prompt, in order; None when retrieval was off.
    sources: list[str] | None


def _sources(passages: list[dict]) -> list[str]:
    return [passage.get("source_uri") or passage.get("title", "") for passage in passages]


def _question_of(conversation: list[dict]) -> str:
    return next((m["content"] for m in reversed(conversation) if m["role"] == "user"), "")


def eval_split_questions(*, project: Project, dataset_version_id: int) -> list[EvaluationQuestion]:
    """The dataset version's held-out examples. The frozen prompt may predate the project's
    current system prompt, and curation may have put a passage first that retrieval never
    served; the prompt is rebuilt from the record's (PII-scrubbed) conversation and the
    passages its interaction was served with. A record whose interaction is gone keeps its
    frozen prompt: there is nothing else to rebuild it from."""
    records = (
        DatasetRecord.objects.filter(
            dataset_version_id=dataset_version_id, kind=DatasetRecord.Kind.SFT, split="eval"
        )
        .select_related("example__interaction")
        .order_by("pk")
    )
    questions = []
    for record in records:
        conversation = [m for m in record.prompt if m["role"] not in SYSTEM_ROLES]
        interaction = record.example.interaction if record.example else None
        if interaction is None:
            prompt = record.prompt
            sources = None
        else:
            own_system = [m for m in interaction.messages if m["role"] in SYSTEM_ROLES]
            served = served_passages(interaction)
            prompt = prompt_messages_build(
                project=project, messages=[*own_system, *conversation], passages=served
            )
            sources = None if served is None else _sources(served)
        questions.append(
            EvaluationQuestion(
                suite="eval_split",
                question=_question_of(conversation),
                prompt=prompt,
                chosen=record.chosen,
                sources=sources,
            )
        )
    return questions


def golden_set_questions(
    *, project: Project, golden_set: list[dict], index_version: IndexVersion | None
) -> list[EvaluationQuestion]:
    """Golden-set questions with the passages retrieval finds for them now, as serving would
    (same retriever, same options) on `index_version`."""
    questions = []
    for item in golden_set:
        conversation = [{"role": "user", "content": item["question"]}]
        retrieval = retrieve(
            project=project,
            query=item["question"],
            options=default_retrieval_options(),
            index_version=index_version,
        )
        passages = retrieval_log_entries(retrieval)
        questions.append(
            EvaluationQuestion(
                suite="golden_set",
                question=item["question"],
                prompt=prompt_messages_build(
                    project=project, messages=conversation, passages=passages
                ),
                chosen=item["answer"],
                sources=_sources(passages or []),
            )
        )
    return questions
