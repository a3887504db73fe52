"""The question file: what the simulated users ask, the reference answers the oracle judges
by, and which questions are held out.

QUESTION_FILE_FORMAT is the documentation (the command's help shows it)."""

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

QUESTION_FILE_FORMAT = """\
The question file is JSON Lines, one question per line:
  question     (required) the question, as a user would ask it
  answer       (required) the reference answer: one short sentence holding just the fact
               asked. Answers are scored by token F1 and ROUGE-L against it, and the oracle
               takes every number in it (digits, or "two" and up) as a fact a right answer
               must repeat; without numbers, a right answer holds at least half of its
               content words that the question does not already contain
  paraphrases  (optional) a list of rewordings; they are never asked by the simulated users,
               only measured, so they show whether what was learnt carries over
  source       (optional) the document that answers it: its path relative to the corpus
               folder (e.g. "errors/e-305.md") or its document id; without it the question
               counts for the answer scores but not for retrieval hit rates
  split        (optional) "train" (the default): asked, rated and corrected every turn; or
               "heldout": an unseen question, only ever measured (its paraphrases too)
Example line:
  {"question": "What does error E-305 mean?", "answer": "Strong radio interference.", \
"paraphrases": ["My hub shows E-305; what is wrong?"], "source": "error-codes.md"}"""


class QuestionFileError(ValueError):
    """The file breaks the format; the message names the line."""


class QuestionSplit(StrEnum):
    TRAIN = "train"
    HELDOUT = "heldout"


class ProbeGroup(StrEnum):
    """How a measured question relates to the feedback: what the report is split by."""

    TRAIN = "train"  # asked, rated and corrected by the simulated users
    PARAPHRASE = "paraphrase"  # a rewording of a training question, never rated
    UNSEEN = "unseen"  # a held-out question (or its rewording), never rated


@dataclass(frozen=True)
class BenchQuestion:
    number: int  # its line in the file, from 1
    question: str
    answer: str
    paraphrases: tuple[str, ...]
    source: str | None
    split: QuestionSplit


@dataclass(frozen=True)
class Probe:
    """One text that is asked at every measurement."""

    question: BenchQuestion
    group: ProbeGroup
    variant: int = 0  # 0: the question itself; n: its n-th paraphrase

    @property
    def text(self) -> str:
        return (
            self.question.paraphrases[self.variant - 1] if self.variant else self.question.question
        )

    @property
    def key(self) -> str:
        """Stable across stages, so that a question's answers can be followed stage by stage."""
        return f"q{self.question.number}" + (f".p{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class QuestionSet:
    path: Path
    questions: tuple[BenchQuestion, ...]

    @property
    def train(self) -> list[BenchQuestion]:
        return [q for q in self.questions if q.split == QuestionSplit.TRAIN]

    @property
    def heldout(self) -> list[BenchQuestion]:
        return [q for q in self.questions if q.split == QuestionSplit.HELDOUT]

    def probes(self) -> list[Probe]:
        """Every training question, then every paraphrase of one, then every held-out text."""
        probes = [Probe(question=q, group=ProbeGroup.TRAIN) for q in self.train]
        probes += [
            Probe(question=q, group=ProbeGroup.PARAPHRASE, variant=variant)
            for q in self.train
            for variant in range(1, len(q.paraphrases) + 1)
        ]
        probes += [
            Probe(question=q, group=ProbeGroup.UNSEEN, variant=variant)
            for q in self.heldout
            for variant in range(len(q.paraphrases) + 1)
        ]
        return probes

    def sources(self) -> set[str]:
        return {q.source for q in self.questions if q.source is not None}


def _text(value, *, field: str, line: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise QuestionFileError(f"line {line}: {field} must be a non-empty string")
    return value.strip()


def _question_parse(item, *, line: int) -> BenchQuestion:
    if not isinstance(item, dict):
        raise QuestionFileError(f"line {line}: expected a JSON object")
    unknown = sorted(set(item) - {"question", "answer", "paraphrases", "source", "split"})
    if unknown:
        raise QuestionFileError(f"line {line}: unknown fields {', '.join(unknown)}")
    paraphrases = item.get("paraphrases") or []
    if not isinstance(paraphrases, list):
        raise QuestionFileError(f"line {line}: paraphrases must be a list of strings")
    source = item.get("source")
    if source is not None and not isinstance(source, str | int):
        raise QuestionFileError(f"line {line}: source must be a path or a document id")
    try:
        split = QuestionSplit(item.get("split", QuestionSplit.TRAIN))
    except ValueError:
        raise QuestionFileError(f"line {line}: split must be 'train' or 'heldout'") from None
    return BenchQuestion(
        number=line,
        question=_text(item.get("question"), field="question", line=line),
        answer=_text(item.get("answer"), field="answer", line=line),
        paraphrases=tuple(
            dict.fromkeys(_text(text, field="a paraphrase", line=line) for text in paraphrases)
        ),
        source=str(source).strip() if source is not None else None,
        split=split,
    )


def question_set_load(*, path: Path, max_questions: int | None = None) -> QuestionSet:
    """Read and check the whole file; `max_questions` keeps the first ones (blank lines
    skipped), held-out ones included where they fall."""
    questions = []
    for line, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as error:
            raise QuestionFileError(f"line {line}: not JSON ({error.msg})") from None
        questions.append(_question_parse(item, line=line))
    if max_questions is not None:
        questions = questions[:max_questions]
    question_set = QuestionSet(path=Path(path), questions=tuple(questions))
    if not question_set.train:
        raise QuestionFileError(f"{path}: no training questions; the users would ask nothing")
    return question_set
