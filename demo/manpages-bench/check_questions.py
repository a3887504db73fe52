#!/usr/bin/env python3
"""Self-check of demo/manpages-bench/questions.jsonl against the rendered corpus.

Checks that every line is a JSON object with the keys the loop benchmark reads (question,
answer, paraphrases, source, split), exactly one paraphrase per question, at least 64 train
and 24 held-out questions, no page with more than 3 questions, that every source file exists
in corpus/, and that every option-like token (-x, --long-name) and every number in an answer
appears in its source text. Standard library only.

Usage: python3 demo/manpages-bench/check_questions.py [QUESTIONS] [CORPUS_DIR]
Exit status 0 when everything holds, 1 otherwise (each problem is printed).
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIRED_KEYS = ("question", "answer", "paraphrases", "source", "split")
SPLITS = ("train", "heldout")
MIN_TRAIN, MIN_HELDOUT, MAX_PER_SOURCE = 64, 24, 3

# An option as written on a command line: -x, -oL, -12, --long-name (up to any "=" or "[").
# Not a hyphen inside a word ("rwxr-xr-x", "512-byte", "command-line").
OPTION = re.compile(r"(?<![\w-])--?[A-Za-z0-9][A-Za-z0-9-]*")
# The numbers the oracle (bench/loop/oracle.py) checks: integers, decimals, times,
# not the digits of a name or code ("-6", "USR1", "x2"); and number words from "two" up.
NUMBER = re.compile(r"(?<![\w-])\d+(?:[.:]\d+)*")
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


def options_in(text: str) -> list[str]:
    return [token.rstrip("-") for token in OPTION.findall(text)]


def option_found(option: str, source_text: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(option) + r"(?![\w-])", source_text) is not None


def numbers_in(text: str) -> list[str]:
    found = NUMBER.findall(text)
    found += [w for w in re.findall(r"[a-z]+", text.lower()) if w in NUMBER_WORDS]
    return found


def number_found(number: str, source_text: str) -> bool:
    if number in NUMBER_WORDS:
        candidates = (number, str(NUMBER_WORDS[number]))
        return any(
            re.search(r"(?<![\w.])" + c + r"(?![\w])", source_text, flags=re.IGNORECASE)
            for c in candidates
        )
    return re.search(r"(?<![\d.])" + re.escape(number) + r"(?![\d])", source_text) is not None


def check(questions_path: Path, corpus_dir: Path) -> list[str]:
    problems: list[str] = []
    rows: list[tuple[int, dict]] = []
    lines = questions_path.read_text(encoding="utf-8").splitlines()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            problems.append(f"line {number}: blank line")
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as error:
            problems.append(f"line {number}: not JSON ({error.msg})")
            continue
        if not isinstance(item, dict):
            problems.append(f"line {number}: not a JSON object")
            continue
        rows.append((number, item))

    texts: dict[str, str] = {}
    seen_questions: dict[str, int] = {}
    for number, item in rows:
        where = f"line {number}"
        missing = [key for key in REQUIRED_KEYS if key not in item]
        unknown = sorted(set(item) - set(REQUIRED_KEYS))
        if missing:
            problems.append(f"{where}: missing keys {', '.join(missing)}")
        if unknown:
            problems.append(f"{where}: unknown keys {', '.join(unknown)}")
        if missing:
            continue
        question, answer, paraphrases = item["question"], item["answer"], item["paraphrases"]
        source, split = item["source"], item["split"]
        for key in ("question", "answer", "source"):
            if not isinstance(item[key], str) or not item[key].strip():
                problems.append(f"{where}: {key} must be a non-empty string")
        if split not in SPLITS:
            problems.append(f"{where}: split must be one of {', '.join(SPLITS)}, not {split!r}")
        if (
            not isinstance(paraphrases, list)
            or len(paraphrases) != 1
            or not isinstance(paraphrases[0], str)
            or not paraphrases[0].strip()
        ):
            problems.append(f"{where}: paraphrases must be a list of exactly one string")
        elif paraphrases[0].strip().lower() == str(question).strip().lower():
            problems.append(f"{where}: the paraphrase repeats the question")
        if isinstance(question, str):
            key = question.strip().lower()
            if key in seen_questions:
                problems.append(f"{where}: same question as line {seen_questions[key]}")
            seen_questions.setdefault(key, number)
        if not isinstance(source, str) or not isinstance(answer, str):
            continue
        path = corpus_dir / source
        if not path.is_file():
            problems.append(f"{where}: source {source} is not in {corpus_dir}")
            continue
        if source not in texts:
            texts[source] = path.read_text(encoding="utf-8")
        text = texts[source]
        for option in options_in(answer):
            if not option_found(option, text):
                problems.append(f"{where}: option {option} of the answer is not in {source}")
        for value in numbers_in(answer):
            if not number_found(value, text):
                problems.append(f"{where}: number {value} of the answer is not in {source}")

    valid = [item for _, item in rows if all(key in item for key in REQUIRED_KEYS)]
    splits = Counter(item["split"] for item in valid)
    if splits["train"] < MIN_TRAIN:
        problems.append(f"only {splits['train']} train questions (need {MIN_TRAIN})")
    if splits["heldout"] < MIN_HELDOUT:
        problems.append(f"only {splits['heldout']} heldout questions (need {MIN_HELDOUT})")
    for source, count in sorted(Counter(item["source"] for item in valid).items()):
        if count > MAX_PER_SOURCE:
            problems.append(f"{source}: {count} questions (at most {MAX_PER_SOURCE})")
    train_answers = {item["answer"] for item in valid if item["split"] == "train"}
    for item in valid:
        if item["split"] == "heldout" and item["answer"] in train_answers:
            problems.append(f"held-out answer repeats a training answer: {item['answer']}")
    return problems


def main() -> int:
    questions_path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "questions.jsonl"
    corpus_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "corpus"
    problems = check(questions_path, corpus_dir)
    for problem in problems:
        print(problem)
    if problems:
        print(f"FAILED: {len(problems)} problem(s) in {questions_path}")
        return 1
    lines = questions_path.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    splits = Counter(row["split"] for row in rows)
    documents = len(list(corpus_dir.glob("*.txt")))
    print(
        f"OK: {len(rows)} questions ({splits['train']} train, {splits['heldout']} heldout), "
        f"{sum(len(row['paraphrases']) for row in rows)} paraphrases, "
        f"{len({row['source'] for row in rows})} of {documents} documents asked about"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
