"""What one answer tells about the loop, and the figures of a stage per probe group.

Retrieval counts a citation as a hit when it is the question's source document (by path or
document id) or an FAQ entry (`faq:<review id>`) made from a correction of a question with the
same source: the index refresh turns approved corrections into such entries, and finding
one is exactly what it is for.
"""

from dataclasses import asdict, dataclass

from bench.loop.oracle import Verdict
from bench.loop.questions import Probe, ProbeGroup

# Citations asked for per question: hit@5 needs five.
RETRIEVAL_DEPTH = 5


def citation_is_source(citation: dict, *, source: str, faq_sources: dict[str, str]) -> bool:
    uri = citation.get("source_uri") or ""
    if uri in faq_sources:
        return faq_sources[uri] == source
    return source in (uri, str(citation.get("document_id")))


@dataclass(frozen=True)
class Observation:
    """One probe asked at one stage: the answer, how it scored, and where it came from."""

    stage: str
    probe: Probe
    interaction_id: str
    answer: str
    retrieval: bool  # retrieval was on for this answer
    citations: list[dict]  # source_uri and document_id, best first
    source_ranks: tuple[int, ...]  # ranks (from 1) of the citations that are the source
    passages_read: int  # the first citations that fitted in the model's context
    verdict: Verdict
    model_version: str
    index_version: int | None
    answered_from: str = "generated"  # or "verified_answer", "quote"

    @property
    def counts_for_retrieval(self) -> bool:
        return self.retrieval and self.probe.question.source is not None

    def hit_at(self, depth: int) -> bool:
        return any(rank <= depth for rank in self.source_ranks)

    @property
    def source_in_context(self) -> bool:
        return self.hit_at(self.passages_read)

    def as_dict(self) -> dict:
        question = self.probe.question
        return {
            "stage": self.stage,
            "key": self.probe.key,
            "group": self.probe.group.value,
            "question": self.probe.text,
            "reference": question.answer,
            "source": question.source,
            "answer": self.answer,
            "correct": self.verdict.correct,
            "token_f1": round(self.verdict.token_f1, 4),
            "rouge_l": round(self.verdict.rouge_l, 4),
            "missing_numbers": list(self.verdict.missing_numbers),
            "answer_words_found": self.verdict.answer_words_found,
            "citations": [c.get("source_uri") for c in self.citations],
            "source_ranks": list(self.source_ranks),
            "passages_read": self.passages_read,
            "model_version": self.model_version,
            "answered_from": self.answered_from,
            "index_version": self.index_version,
            "interaction_id": self.interaction_id,
        }


@dataclass(frozen=True)
class GroupFigures:
    questions: int
    with_source: int  # answered with retrieval and a known source: the retrieval figures' base
    hit_at_1: float | None
    hit_at_5: float | None
    source_in_context: float | None
    token_f1: float | None
    rouge_l: float | None
    correct: float | None  # the oracle's verdict
    verified_served: float | None  # share answered with a verified answer
    quoted: float | None  # share answered with a quote of the passages

    def as_dict(self) -> dict:
        return {
            key: round(value, 4) if isinstance(value, float) else value
            for key, value in asdict(self).items()
        }


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def group_figures(observations: list[Observation]) -> GroupFigures:
    sourced = [o for o in observations if o.counts_for_retrieval]
    return GroupFigures(
        questions=len(observations),
        with_source=len(sourced),
        hit_at_1=_mean([o.hit_at(1) for o in sourced]),
        hit_at_5=_mean([o.hit_at(5) for o in sourced]),
        source_in_context=_mean([o.source_in_context for o in sourced]),
        token_f1=_mean([o.verdict.token_f1 for o in observations]),
        rouge_l=_mean([o.verdict.rouge_l for o in observations]),
        correct=_mean([o.verdict.correct for o in observations]),
        verified_served=_mean([o.answered_from == "verified_answer" for o in observations]),
        quoted=_mean([o.answered_from == "quote" for o in observations]),
    )


def figures_by_group(observations: list[Observation]) -> dict[str, dict]:
    return {
        group.value: group_figures([o for o in observations if o.probe.group == group]).as_dict()
        for group in ProbeGroup
        if any(o.probe.group == group for o in observations)
    }
