"""The oracle plays the end user who knows the right answer: it judges each answer against the
reference and rates it as that user would, through the ratings API.

Token F1 alone cannot judge: an answer with a wrong figure ("every 5 minutes" for 15) shares
most of its words with the reference, and so does one that echoes the question ("The beta
channel is called the beta channel.") while missing the one word that matters. So:
- a reference with numbers (digits, or number words from "two" up) is a fact to be checked:
  the answer is right when it holds every one of them; digits inside a name or code
  ("HS-7", "E-305") are part of the name, not numbers;
- a reference without numbers is right when the answer holds at least `threshold` of the
  reference's content words that the question does not already contain ("squall" for "What
  is the beta firmware channel called?");
- either way the answer's token F1 with the reference must reach half the threshold, so that
  a long ramble that happens to contain the right words does not pass.
"""

import re
from dataclasses import dataclass

# The normalisation token F1 and ROUGE-L use, so that all three read words alike.
from retrain.evaluation.metrics import _normalised_tokens as normalised_tokens
from retrain.evaluation.metrics import rouge_l, token_f1

# Integers, decimals and times (24, 9.6, 02:00, the 3 of "3rd"), not the digits of a code.
NUMBER = re.compile(r"(?<![\w-])\d+(?:[.:]\d+)*")
DIGITS = re.compile(r"\d+")
WORD = re.compile(r"[a-z]+")
# "one" is left out: it is a pronoun as often as a number.
NUMBER_WORDS = {
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "hundred": 100,
}
# Words that carry no fact: an answer holding only these holds nothing of the reference.
FUNCTION_WORDS = frozenset(
    """a an the is are was were be been being am do does did has have had having it its this
    that these those there here of in on at to for from by with without into onto over under
    about after before between during up down out off and or but if then than so as not no can
    could will would should may might must shall i you he she we they me him her us them my
    your our their what which who whom whose when where why how all any each every some more
    most other such only own same too very just also""".split()  # noqa: SIM905 - words read best as words
)
RIGHT_SCORE = 5
PARTLY_RIGHT_SCORE = 2
WRONG_SCORE = 1


def numbers_in(text: str) -> set[str]:
    """The numbers of `text` as digits, without leading zeros (02:00 and 2:00 are the same
    time, "three" is 3)."""
    found = {DIGITS.sub(lambda digits: str(int(digits[0])), n) for n in NUMBER.findall(text)}
    found |= {str(NUMBER_WORDS[w]) for w in WORD.findall(text.lower()) if w in NUMBER_WORDS}
    return found


def answer_bearing_words(*, reference: str, question: str) -> set[str]:
    """The reference's content words that the question does not already contain."""
    asked = set(normalised_tokens(question))
    return {
        word
        for word in normalised_tokens(reference)
        if word not in asked and word not in FUNCTION_WORDS
    }


@dataclass(frozen=True)
class Verdict:
    correct: bool
    token_f1: float
    rouge_l: float
    missing_numbers: tuple[str, ...]
    answer_words_found: float | None  # share of the answer-bearing words; None: numbers judged


def answer_judge(*, answer: str, reference: str, question: str, threshold: float) -> Verdict:
    expected_numbers = numbers_in(reference)
    missing = tuple(sorted(expected_numbers - numbers_in(answer)))
    f1 = token_f1(answer, reference)
    found = None
    if expected_numbers:
        holds_the_facts = not missing
    else:
        expected_words = answer_bearing_words(reference=reference, question=question)
        found = (
            len(expected_words & set(normalised_tokens(answer))) / len(expected_words)
            if expected_words
            else f1
        )
        holds_the_facts = found >= threshold
    return Verdict(
        correct=holds_the_facts and f1 >= threshold / 2,
        token_f1=f1,
        rouge_l=rouge_l(answer, reference),
        missing_numbers=missing,
        answer_words_found=found,
    )


def rating_payload(*, interaction_id: str, rater_id: str, verdict: Verdict, reference: str) -> dict:
    """The rating a user who knows `reference` gives: thumbs up and 5 when right; thumbs down,
    1 for a wrong number or 2 otherwise, and the reference as the correction when wrong."""
    if verdict.correct:
        return {
            "interaction_id": interaction_id,
            "rater_id": rater_id,
            "thumb": "up",
            "score": RIGHT_SCORE,
        }
    reason = f"token F1 {verdict.token_f1:.2f}"
    if verdict.missing_numbers:
        reason += f", missing {', '.join(verdict.missing_numbers)}"
    if verdict.answer_words_found is not None:
        reason += f", {verdict.answer_words_found:.0%} of the answer's words"
    return {
        "interaction_id": interaction_id,
        "rater_id": rater_id,
        "thumb": "down",
        "score": WRONG_SCORE if verdict.missing_numbers else PARTLY_RIGHT_SCORE,
        "comment": f"Simulated user: {reason}",
        "correction": reference,
    }
