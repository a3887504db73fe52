"""LLM-as-judge: a model on an OpenAI-compatible server grades an answer against the reference.

Token overlap misses a right answer in other words and rewards a wrong one that copies the
question; a judge reads both. It grades on RUBRIC from 1 to 5, which becomes a score from 0 to
1, the scale of the other metrics, so a gate margin means the same on each.
"""

import re
from dataclasses import dataclass

from django.conf import settings

from flywheel.generation import GenerationParameters, OpenAICompatibleBackend

RUBRIC = (
    "Grade how well the ANSWER answers the QUESTION. The REFERENCE is a correct answer.\n"
    "5: says what the reference says; nothing in it is wrong.\n"
    "4: right, with a minor omission or an extra detail that is not wrong.\n"
    "3: partly right: some of the reference's facts, or a right answer with a wrong detail.\n"
    "2: mostly wrong or missing, with a fragment of the right fact.\n"
    "1: wrong, off the question, or no answer.\n"
    "Reply with the grade alone: one digit from 1 to 5."
)
LOWEST_GRADE, HIGHEST_GRADE = 1, 5
GRADE = re.compile(rf"\b([{LOWEST_GRADE}-{HIGHEST_GRADE}])\b")
# A grade is one digit; a little room lets a chatty judge say "Grade: 4".
JUDGE_MAX_TOKENS = 16


@dataclass(frozen=True)
class Judgement:
    # From 0 (grade 1) to 1 (grade 5); None when the reply held no grade.
    score: float | None
    grade: int | None
    reply: str


class Judge:
    def __init__(self, *, base_url: str, model: str, api_key: str = "", timeout: float = 120):
        self.model = model
        self.base_url = base_url
        self._backend = OpenAICompatibleBackend(
            base_url=base_url, model=model, api_key=api_key, timeout=timeout
        )

    def describe(self) -> dict:
        """What an evaluation records about its judge, so a score can be read later."""
        return {"base_url": self.base_url, "model": self.model, "rubric": RUBRIC}

    def judge(self, *, question: str, reference: str, answer: str) -> Judgement:
        """Raises GenerationError when the judge's server fails."""
        reply = self._backend.generate(
            [
                {"role": "system", "content": RUBRIC},
                {
                    "role": "user",
                    "content": f"QUESTION: {question}\nREFERENCE: {reference}\n"
                    f"ANSWER: {answer}\nGRADE:",
                },
            ],
            GenerationParameters(max_tokens=JUDGE_MAX_TOKENS, temperature=0.0),
        ).text
        found = GRADE.search(reply)
        if found is None:
            return Judgement(score=None, grade=None, reply=reply)
        grade = int(found.group(1))
        score = (grade - LOWEST_GRADE) / (HIGHEST_GRADE - LOWEST_GRADE)
        return Judgement(score=score, grade=grade, reply=reply)


def configured_judge() -> Judge | None:
    """The judge the settings name, or None when no judge is configured."""
    if not settings.FLYWHEEL_JUDGE_BASE_URL or not settings.FLYWHEEL_JUDGE_MODEL:
        return None
    return Judge(
        base_url=settings.FLYWHEEL_JUDGE_BASE_URL,
        model=settings.FLYWHEEL_JUDGE_MODEL,
        api_key=settings.FLYWHEEL_JUDGE_API_KEY,
        timeout=settings.FLYWHEEL_REMOTE_TIMEOUT_SECONDS,
    )
