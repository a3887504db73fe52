"""Curation at scale: N rated interactions (100,000 by default) curated into instruction
examples and frozen into a dataset version, with seconds and peak memory for each phase.

The interactions look like the chat interactions Flywheel serves for the demo notes app: a
question, the four passages of demo/knowledge_base retrieved for it (scores and ranks as
logged), the answer, and serving's metadata. Questions come from 3,200 texts (16 tasks about
40 subjects, five phrasings each), drawn with a long tail as support questions are: the
phrasings of one task and subject are real near-duplicates, and the same question with the
same answer is an exact duplicate. One conversation in ten has an earlier turn, some with the
user's e-mail address in it, and some corrections name an address too, for the PII scrubber.
Feedback, per interaction: 60 % thumbs up, 15 % thumbs down, 10 % thumbs down with a
correction, 10 % a score from 1 to 5, 5 % a reviewer's verdict (approved, corrected or
rejected; most of these also carry a thumb). The query embedding of each distinct question is
computed once with the real model (flywheel.ml.loading.embed_texts), in a child process so
that the model's memory stays out of this one, and every row is loaded with a binary COPY.

Phases, one after the other in this process:
  (a) curation of every interaction with feedback through interactions_curate, in batches of
      --batch-size ids, as `manage.py curate` does;
  (b) dataset_snapshot of the curated examples: one record per cluster, plus preference pairs;
  (c) dataset_snapshot of a copy of the project (made with SQL, not timed) in which every
      example represents a cluster of its own, as if no two questions were alike: a dataset
      version of about as many records as there were interactions.

Memory, per phase: "peak RSS" is the process's ru_maxrss after its high-water mark was reset
(/proc/self/clear_refs) at the start of the phase, so it is the phase's own peak, resident
baseline included; "Python peak" is tracemalloc's peak of the Python allocations. Tracing
slows this code about threefold, so seconds and RSS come from untraced runs, and the Python
peak from tracing (a)'s last batch (a batch keeps nothing of the ones before it) and a
repeat of (b) and (c) after deleting the version each made. PostgreSQL's memory is in its
own processes and counted in neither.

After the phases, the near-duplicate search that curation uses is probed once per distinct
question, to show how often it finds a stored copy of that very question.

Runs on a database of its own, flywheel_bench_curation by default (the other benchmarks share
flywheel_bench, which each of them recreates on start); --database names another, so that two
runs (before and after a change) can go on at once.
Run from the repository root: .venv/bin/python bench/curation.py [--count 100000]
"""

import argparse
import hashlib
import math
import multiprocessing
import os
import random
import re
import resource
import sys
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import REPOSITORY_ROOT, bench_django_setup, machine_context, table

# Not flywheel_bench: recreating that one would drop another benchmark's data under it.
CURATION_BENCH_DATABASE_NAME = "flywheel_bench_curation"

SEED = 20_251_121
KNOWLEDGE_BASE = REPOSITORY_ROOT / "demo" / "knowledge_base"
PASSAGES_PER_ANSWER = 4
HISTORY_DAYS = 90
PROGRESS_EVERY = 10_000  # interactions curated between two progress lines

# (subject, where the app keeps it): the answers send the user there.
SUBJECTS = [
    ("a shelf", "the sidebar"),
    ("a note", "the note list"),
    ("a tag", "the tag panel"),
    ("a template", "Settings → Templates"),
    ("an attachment", "the note's paperclip menu"),
    ("a shared shelf", "the shelf menu"),
    ("a workspace", "Settings → Workspaces"),
    ("a team member", "Settings → Members"),
    ("a reminder", "the note's bell menu"),
    ("a checklist", "the editor toolbar"),
    ("a table in a note", "the editor toolbar"),
    ("a web clip", "the browser extension"),
    ("an API token", "Settings → Developer"),
    ("a webhook", "Settings → Developer"),
    ("my password", "Settings → Account"),
    ("my e-mail address", "Settings → Account"),
    ("two-factor sign-in", "Settings → Security"),
    ("single sign-on", "Settings → Security"),
    ("the audit log", "Settings → Security"),
    ("my invoice", "Settings → Billing"),
    ("my plan", "Settings → Billing"),
    ("the billing address", "Settings → Billing"),
    ("offline mode", "Settings → Sync"),
    ("sync", "Settings → Sync"),
    ("a backup", "Settings → Backups"),
    ("version history", "the note's clock menu"),
    ("the desktop app", "the Downloads page"),
    ("the mobile app", "the app store page"),
    ("dark mode", "Settings → Appearance"),
    ("keyboard shortcuts", "Settings → Shortcuts"),
    ("notifications", "Settings → Notifications"),
    ("a saved search", "the search bar"),
    ("a pinned note", "the note menu"),
    ("a note link", "the note menu"),
    ("a PDF export", "the shelf menu"),
    ("a Markdown import", "Settings → Import"),
    ("a calendar event", "Settings → Integrations"),
    ("the Slack integration", "Settings → Integrations"),
    ("a guest account", "Settings → Members"),
    ("an emoji reaction", "the comment bar"),
]


@dataclass(frozen=True)
class Task:
    """Five ways users ask it, three answers the model gives, two corrections users write."""

    phrasings: tuple[str, ...]
    answers: tuple[str, ...]
    corrections: tuple[str, ...]


TASKS = [
    Task(
        (
            "How do I set up {s}?",
            "How can I create {s}?",
            "Where do I add {s}?",
            "how to set up {s}",
            "Is there a way to make {s}?",
        ),
        (
            "Open {where} and choose New; {s} is ready at once and syncs to your devices.",
            "Go to {where}, pick New and give it a name. That is all it takes.",
            "You can set up {s} from {where}: choose New, then Save.",
        ),
        (
            "Open {where}, press the + button and name it; it appears on every device.",
            "Use {where} → New. On the Sprout plan you can have up to 3 shelves.",
        ),
    ),
    Task(
        (
            "How do I delete {s}?",
            "How can I remove {s}?",
            "Where is the option to delete {s}?",
            "how to get rid of {s}",
            "Can I permanently delete {s}?",
        ),
        (
            "Open {where}, choose the item and press Delete. It stays in the bin for 30 days.",
            "In {where}, right-click it and choose Delete; the bin keeps it 30 days.",
            "Select it in {where} and press the Delete key.",
        ),
        (
            "Delete it from {where}; to remove it for good, empty the bin afterwards.",
            "Choose Delete in {where}. The bin empties itself after 30 days.",
        ),
    ),
    Task(
        (
            "How do I restore {s} I deleted?",
            "Can I get back {s} I removed by mistake?",
            "How can I recover {s}?",
            "undo deleting {s}",
            "Is it possible to bring back {s} after deleting it?",
        ),
        (
            "Open the bin in the sidebar, select it and choose Restore within 30 days.",
            "Deleted items stay in the bin for 30 days: open it and choose Restore.",
            "Go to the bin, find it and press Restore; it returns to {where}.",
        ),
        (
            "Open the bin from the sidebar and choose Restore; after 30 days it is gone for good.",
            "Restore it from the bin within 30 days; Grove workspaces keep backups for a year.",
        ),
    ),
    Task(
        (
            "How do I share {s} with my team?",
            "Can I share {s} with someone outside my workspace?",
            "How can others see {s}?",
            "share {s} with a colleague",
            "What's the way to give a coworker access to {s}?",
        ),
        (
            "Open {where}, choose Share and enter your colleague's e-mail address.",
            "Use Share in {where}; people outside the workspace join as guests.",
            "Choose Share from {where} and pick who may view or edit.",
        ),
        (
            "Choose Share in {where}. Guests need a Canopy or Grove plan.",
            "Share it from {where}; viewers need no account, editors do.",
        ),
    ),
    Task(
        (
            "How do I export {s}?",
            "Can I download {s} as a file?",
            "How can I back up {s} to my computer?",
            "export {s}",
            "Is there a way to save {s} outside Quillmate?",
        ),
        (
            "Open {where} and choose Export; you get Markdown files in a zip.",
            "Use Export in {where}. PDF and Markdown are both available.",
            "Choose Export from {where}, then pick the format.",
        ),
        (
            "Export from {where}: Markdown keeps links and tags, PDF keeps the layout.",
            "Use {where} → Export; large shelves arrive by e-mail as a download link.",
        ),
    ),
    Task(
        (
            "How do I rename {s}?",
            "Can I change the name of {s}?",
            "Where do I edit the title of {s}?",
            "rename {s}",
            "How can I give {s} a different name?",
        ),
        (
            "Double-click its name in {where} and type the new one.",
            "Open {where}, choose Rename and press Enter when done.",
            "Right-click it in {where} and pick Rename.",
        ),
        (
            "Choose Rename in {where}; links to it keep working.",
            "Click the title in {where} and edit it; the change syncs at once.",
        ),
    ),
    Task(
        (
            "How do I move {s} to another workspace?",
            "Can I transfer {s} to a different workspace?",
            "How can I move {s} between workspaces?",
            "move {s} to my other workspace",
            "Is it possible to relocate {s} to a new workspace?",
        ),
        (
            "Open {where}, choose Move and pick the workspace.",
            "Use Move in {where}; you need edit rights in both workspaces.",
            "Drag it onto the other workspace in the sidebar.",
        ),
        (
            "Choose Move in {where}; comments and history move with it.",
            "Use {where} → Move. Shared links break, so share it again afterwards.",
        ),
    ),
    Task(
        (
            "Where can I find {s}?",
            "I can't find {s}, where is it?",
            "Where is {s} in the app?",
            "where is {s}",
            "How do I get to {s}?",
        ),
        (
            "It is in {where}.",
            "You will find it under {where}.",
            "Look in {where}; search with Ctrl+K finds it too.",
        ),
        (
            "Open {where}; if it is missing, your plan may not include it.",
            "It lives in {where}. Ctrl+K searches every note and setting.",
        ),
    ),
    Task(
        (
            "How do I turn off {s}?",
            "Can I disable {s}?",
            "How can I switch {s} off?",
            "disable {s}",
            "Is there a setting to stop {s}?",
        ),
        (
            "Open {where} and switch it off.",
            "In {where}, clear the Enabled box.",
            "Go to {where} and choose Disable.",
        ),
        (
            "Switch it off in {where}; admins can turn it off for the whole workspace.",
            "Use {where} → Disable. It takes effect on every device within a minute.",
        ),
    ),
    Task(
        (
            "Why doesn't {s} sync to my phone?",
            "{S} is not syncing between my devices, what can I do?",
            "Why are changes to {s} missing on my laptop?",
            "{s} not syncing",
            "How do I fix {s} not updating on my other devices?",
        ),
        (
            "Check Settings → Sync on both devices and sign out and in again.",
            "Make sure both devices are online; changes sync within seconds.",
            "Open Settings → Sync and choose Sync now.",
        ),
        (
            "Open Settings → Sync and choose Sync now; a device offline for 30 days must sign in "
            "again.",
            "Update the app on both devices; versions older than 4.2 no longer sync.",
        ),
    ),
    Task(
        (
            "Can I use {s} offline?",
            "Does {s} work without an internet connection?",
            "Will {s} be available when I'm offline?",
            "{s} offline",
            "What happens to {s} when I lose my connection?",
        ),
        (
            "Yes: every device keeps a full copy and syncs when it is back online.",
            "It works offline; changes are merged when you reconnect.",
            "Offline mode keeps everything on your device, so yes.",
        ),
        (
            "Yes on desktop and mobile; the web app needs a connection.",
            "Yes. Conflicting edits made offline are kept side by side as two versions.",
        ),
    ),
    Task(
        (
            "Does {s} cost extra?",
            "Which plan do I need for {s}?",
            "Is {s} included in the free Sprout plan?",
            "price of {s}",
            "Do I have to pay to use {s}?",
        ),
        (
            "It is included in every plan.",
            "You need Canopy (9 euros per user per month).",
            "Sprout includes it; Grove adds more.",
        ),
        (
            "It is part of Canopy and Grove; Sprout has it with a limit of 3 shelves.",
            "Grove (21 euros per user per month) includes it with single sign-on.",
        ),
    ),
    Task(
        (
            "Is there a limit on {s}?",
            "How many times can I use {s}?",
            "What is the maximum for {s}?",
            "limits for {s}",
            "Will I hit a cap with {s}?",
        ),
        (
            "There is no limit on paid plans.",
            "Sprout allows 3; Canopy and Grove have no limit.",
            "The limit is 1,000 per workspace.",
        ),
        (
            "No limit on Canopy and Grove; Sprout stops at 3 shelves.",
            "Files up to 200 MB each; there is no limit on how many.",
        ),
    ),
    Task(
        (
            "Is {s} encrypted?",
            "How secure is {s}?",
            "Can Quillmate staff read {s}?",
            "{s} encryption",
            "Is {s} protected if my laptop is stolen?",
        ),
        (
            "Yes, it is encrypted in transit and at rest.",
            "Everything is encrypted with AES-256 at rest and TLS in transit.",
            "Staff cannot read your data without your permission.",
        ),
        (
            "Encrypted at rest and in transit; turn on two-factor sign-in in Settings → Security.",
            "Yes; a stolen laptop can be signed out remotely from Settings → Security.",
        ),
    ),
    Task(
        (
            "{S} stopped working, how do I fix it?",
            "Why is {s} broken?",
            "I get an error with {s}, what should I do?",
            "{s} error",
            "Something is wrong with {s}, can you help?",
        ),
        (
            "Restart the app and try again; if it persists, contact support.",
            "Sign out and in again, then check {where}.",
            "Update to the latest version and open {where} again.",
        ),
        (
            "Update the app, then open {where}; write to support@quillmate.example if it fails.",
            "Clear the app cache in Settings → Advanced and reopen {where}.",
        ),
    ),
    Task(
        (
            "Who can edit {s}?",
            "Can I make {s} read-only?",
            "How do I control who changes {s}?",
            "permissions for {s}",
            "Is it possible to lock {s} so nobody edits it?",
        ),
        (
            "Owners and editors can; set roles in {where}.",
            "Open {where} and choose Permissions.",
            "Choose Lock in {where} to make it read-only.",
        ),
        (
            "Set each person's role in {where}; viewers can comment but not edit.",
            "Choose Permissions in {where}; only admins can change owners.",
        ),
    ),
]
WRONG_ANSWERS = (
    "I'm sorry, Quillmate cannot do that.",
    "Please contact your administrator.",
    "That is not possible with {s}.",
    "You need to reinstall the app to use {s}.",
)
PLANS = ("Sprout", "Canopy", "Grove")
REVIEW_DECISIONS = (("approved", 0.5), ("corrected", 0.3), ("rejected", 0.2))
SCORE_WEIGHTS = (1, 1, 2, 3, 3)  # for scores 1..5


def template_fill(template: str, *, subject: str, where: str) -> str:
    capitalised = subject[:1].upper() + subject[1:]
    return template.format(s=subject, S=capitalised, where=where)


@dataclass(frozen=True)
class Question:
    text: str
    task: Task
    subject: str
    where: str

    def fill(self, template: str) -> str:
        return template_fill(template, subject=self.subject, where=self.where)


def questions_catalogue() -> list[Question]:
    return [
        Question(
            text=template_fill(phrasing, subject=subject, where=where),
            task=task,
            subject=subject,
            where=where,
        )
        for task in TASKS
        for subject, where in SUBJECTS
        for phrasing in task.phrasings
    ]


def knowledge_base_sections() -> list[tuple[str, str, str]]:
    """(document title, heading, text) of every second-level section of the demo knowledge
    base: the passages retrieval would serve."""
    sections = []
    for path in sorted(KNOWLEDGE_BASE.glob("*.md")):
        text = path.read_text()
        title = text.splitlines()[0].removeprefix("# ").strip()
        for part in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
            heading, _, body = part.partition("\n")
            sections.append((title, f"{title} > {heading.strip()}", " ".join(body.split())))
    return sections


def _embed_in_child_process(texts: list[str]) -> np.ndarray:
    import django

    django.setup()
    from flywheel.ml.loading import embed_texts

    return embed_texts(texts)


def questions_embed(questions: list[Question], *, cache_dir: Path) -> tuple[np.ndarray, bool]:
    """The real model's embedding of each distinct question, computed once and cached under
    `cache_dir` for reruns; (vectors, whether they came from the cache). The model runs in a
    child process: torch and its weights would otherwise sit in this process's memory."""
    from flywheel.services.indexing import embedding_model_name

    texts = [question.text for question in questions]
    digest = hashlib.sha256("\0".join([embedding_model_name(), *texts]).encode()).hexdigest()
    path = cache_dir / f"question-embeddings-{len(texts)}-{digest[:16]}.npy"
    if path.exists():
        return np.load(path), True
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        vectors = child.submit(_embed_in_child_process, texts).result()
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors, False


@dataclass
class GeneratedFeedback:
    interactions: list[tuple] = field(default_factory=list)
    ratings: list[tuple] = field(default_factory=list)
    reviews: list[tuple] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)


FEEDBACK_MIX = (
    ("thumbs up", 0.60),
    ("thumbs down", 0.15),
    ("correction", 0.10),
    ("score", 0.10),
    ("reviewed", 0.05),
)


def feedback_generate(
    *,
    count: int,
    questions: list[Question],
    vectors: np.ndarray,
    project_id: int,
    index_version_id: int,
    model_version_id: int,
    reviewer_id: int,
) -> GeneratedFeedback:
    """Rows for COPY: interactions, ratings and reviews, in the order of their columns."""
    from psycopg.types.json import Jsonb

    from flywheel.models import Interaction

    rng = random.Random(SEED)
    sections = knowledge_base_sections()
    # A long tail: a few questions are asked very often, most rarely.
    popularity = [1 / (rank + 1) ** 0.8 for rank in range(len(questions))]
    rng.shuffle(popularity)
    drawn = rng.choices(range(len(questions)), weights=popularity, k=count)
    kinds = rng.choices([k for k, _ in FEEDBACK_MIX], weights=[w for _, w in FEEDBACK_MIX], k=count)
    emails = [
        f"{name}.{number}@example.com" for number in range(300) for name in ("maria", "li", "sam")
    ]
    started = datetime.now(UTC) - timedelta(days=HISTORY_DAYS)
    step = timedelta(days=HISTORY_DAYS) / count
    generated = GeneratedFeedback(kinds=Counter(kinds))
    for number, (question_index, kind) in enumerate(zip(drawn, kinds, strict=True)):
        question = questions[question_index]
        interaction_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        created_at = started + step * number
        rated_at = created_at + timedelta(minutes=rng.randint(1, 600))
        good_answer = question.fill(rng.choice(question.task.answers))
        answer_is_bad = kind in ("thumbs down", "correction") or rng.random() < 0.05
        answer = question.fill(rng.choice(WRONG_ANSWERS)) if answer_is_bad else good_answer
        messages = [{"role": "user", "content": question.text}]
        if rng.random() < 0.1:
            opening = f"Hi, I'm on the {rng.choice(PLANS)} plan."
            if rng.random() < 0.5:
                opening = f"Hi, I'm {rng.choice(emails)} on the {rng.choice(PLANS)} plan."
            messages = [
                {"role": "user", "content": opening},
                {"role": "assistant", "content": "Hello! What can I help you with?"},
                *messages,
            ]
        # The same question retrieves the same passages, as a fixed index would.
        passage_rng = random.Random(question_index)
        retrieved = [
            {
                "chunk_id": sections.index(section) + 1,
                "document_id": 1,
                "kind": "document",
                "title": section[0],
                "source_uri": "",
                "heading": section[1],
                "text": section[2],
                "score": round(0.9 - 0.1 * rank + passage_rng.random() * 0.05, 6),
                "rank": rank + 1,
                "vector_similarity": round(0.7 - 0.05 * rank, 6),
                "keyword_score": None,
                "index_version_id": index_version_id,
            }
            for rank, section in enumerate(passage_rng.sample(sections, PASSAGES_PER_ANSWER))
        ]
        metadata = {
            "flywheel": {
                "timings_ms": {"embed_ms": 9.1, "search_ms": 4.2, "generate_ms": 820.0},
                "rag": True,
                "retrieval": {
                    "mode": "hybrid",
                    "top_k": PASSAGES_PER_ANSWER,
                    "filters": {},
                    "query_variants": 0,
                    "hyde": False,
                    "queries": [question.text],
                    "hypothetical_answer": None,
                },
                "finish_reason": "stop",
            }
        }
        generated.interactions.append(
            (
                interaction_id,
                project_id,
                "chat",
                f"session-{number // 3}",
                f"user-{rng.randrange(5000)}",
                Jsonb(messages),
                question.text,
                vectors[question_index],
                Jsonb(retrieved),
                answer,
                model_version_id,
                "SmolLM2-135M-Instruct",
                index_version_id,
                rng.randint(400, 2500),
                rng.randint(300, 900),
                rng.randint(20, 120),
                Jsonb(metadata),
                created_at,
                Interaction.AnsweredFrom.GENERATED,
                "",
            )
        )

        rating = {"thumb": "", "score": None, "correction": ""}
        if kind == "thumbs up":
            rating["thumb"] = "up"
        elif kind == "thumbs down":
            rating["thumb"] = "down"
        elif kind == "correction":
            rating["thumb"] = "down"
            rating["correction"] = question.fill(rng.choice(question.task.corrections))
        elif kind == "score":
            rating["score"] = rng.choices(range(1, 6), weights=SCORE_WEIGHTS)[0]
        else:
            rating["thumb"] = rng.choice(("up", "up", "down")) if rng.random() < 0.7 else None
            decision = rng.choices(*zip(*REVIEW_DECISIONS, strict=True))[0]
            ideal = question.fill(rng.choice(question.task.corrections))
            generated.reviews.append(
                (
                    interaction_id,
                    reviewer_id,
                    decision,
                    ideal if decision == "corrected" else "",
                    "",
                    rated_at + timedelta(days=1),
                    rated_at + timedelta(days=1),
                )
            )
        if rating["thumb"] is not None:  # None: reviewed without an end user's rating
            generated.ratings.append(
                (
                    interaction_id,
                    f"user-{number}",
                    rating["thumb"],
                    rating["score"],
                    "",
                    rating["correction"],
                    Jsonb([]),
                    rng.choice(("widget", "widget", "api")),
                    rated_at,
                    rated_at,
                )
            )
    return generated


INTERACTION_COLUMNS = {
    "id": "uuid",
    "project_id": "bigint",
    "source": "varchar",
    "session_id": "varchar",
    "end_user_id": "varchar",
    "messages": "jsonb",
    "query_text": "text",
    "query_embedding": "vector",
    "retrieved": "jsonb",
    "response": "text",
    "model_version_id": "bigint",
    "model_name": "varchar",
    "index_version_id": "bigint",
    "latency_ms": "integer",
    "prompt_tokens": "integer",
    "completion_tokens": "integer",
    "metadata": "jsonb",
    "created_at": "timestamptz",
    "answered_from": "varchar",
    "request_hash": "varchar",
}
RATING_COLUMNS = {
    "interaction_id": "uuid",
    "rater_id": "varchar",
    "thumb": "varchar",
    "score": "smallint",
    "comment": "text",
    "correction": "text",
    "tags": "jsonb",
    "source": "varchar",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
}
REVIEW_COLUMNS = {
    "interaction_id": "uuid",
    "reviewer_id": "integer",
    "decision": "varchar",
    "ideal_answer": "text",
    "note": "text",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
}


def _unnamed_defaults(model, columns: dict[str, str]) -> dict[str, object]:
    """The Django defaults of `model`'s required columns that `columns` leaves out: a column
    added to the model later (with a default in Python, not in the database) is filled."""
    from django.db.models import NOT_PROVIDED, GeneratedField

    return {
        field.column: field.get_default()
        for field in model._meta.concrete_fields
        if field.column not in columns
        and not field.null
        and not field.primary_key
        and not isinstance(field, GeneratedField)
        and field.db_default is NOT_PROVIDED
    }


def rows_copy(*, database_url: str, model, columns: dict[str, str], rows) -> None:
    import psycopg
    from pgvector.psycopg import register_vector
    from psycopg.types.json import Jsonb

    defaults = _unnamed_defaults(model, columns)
    extra = tuple(
        Jsonb(value) if isinstance(value, dict | list) else value for value in defaults.values()
    )
    table_name = model._meta.db_table
    with psycopg.connect(database_url) as connection:
        register_vector(connection)
        names = ", ".join([*columns, *defaults])
        with connection.cursor().copy(f"COPY {table_name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((*row, *extra))
        connection.execute(f"ANALYZE {table_name}")


Result = TypeVar("Result")


@dataclass
class PhaseMeasure:
    seconds: float
    rss_start_mib: float
    rss_peak_mib: float
    python_peak_mib: float = math.nan


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def phase_measure(work: Callable[[], Result]) -> tuple[Result, PhaseMeasure]:
    """Seconds and resident memory of `work`, run without tracemalloc (which slows it)."""
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from now
    rss_start = _rss_mib()
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result, PhaseMeasure(seconds, rss_start, rss_peak)


def python_peak_measure(work: Callable[[], Result]) -> tuple[Result, float]:
    """`work`'s result and tracemalloc's peak of the Python memory it allocated, in MiB."""
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def project_load(*, database_url: str, count: int, questions, vectors, slug: str):
    """A project holding `count` rated interactions; returns it with the ids `curate` takes."""
    from django.contrib.auth import get_user_model

    from feedback.models import Rating, Review
    from flywheel.models import IndexVersion, Interaction, ModelVersion, Project
    from retrain.selectors import interaction_ids_with_feedback

    project = Project.objects.create(name=f"Curation bench {slug}", slug=slug)
    index_version = IndexVersion.objects.create(
        project=project,
        number=1,
        status=IndexVersion.Status.ACTIVE,
        embedding_model="all-MiniLM-L6-v2",
    )
    model_version = ModelVersion.objects.create(
        project=project, name="base", base_model="", status=ModelVersion.Status.PRODUCTION
    )
    reviewer = get_user_model().objects.create_user(username=f"reviewer-{slug}", password="x")
    generated = feedback_generate(
        count=count,
        questions=questions,
        vectors=vectors,
        project_id=project.pk,
        index_version_id=index_version.pk,
        model_version_id=model_version.pk,
        reviewer_id=reviewer.pk,
    )
    for model, columns, rows in [
        (Interaction, INTERACTION_COLUMNS, generated.interactions),
        (Rating, RATING_COLUMNS, generated.ratings),
        (Review, REVIEW_COLUMNS, generated.reviews),
    ]:
        rows_copy(database_url=database_url, model=model, columns=columns, rows=rows)
    return project, interaction_ids_with_feedback(project=project), generated.kinds


def project_of_distinct_questions_copy(*, source, slug: str):
    """A copy of `source`'s interactions, ratings and curated examples in which every example
    is the representative of a cluster of its own, as if no two questions were alike: a
    snapshot of it writes a record for each example that is not excluded."""
    from django.db import connection
    from django.db.models import GeneratedField

    from feedback.models import Rating
    from flywheel.models import Interaction, Project
    from retrain.models import InstructionExample

    target = Project.objects.create(name=f"Curation bench {slug}", slug=slug)

    def copied_columns(model, *, without: set[str]) -> list[str]:
        return [
            field.column
            for field in model._meta.concrete_fields
            if field.column not in without and not isinstance(field, GeneratedField)
        ]

    interaction_columns = copied_columns(Interaction, without={"id", "project_id"})
    rating_columns = copied_columns(Rating, without={"id", "interaction_id"})
    example_columns = copied_columns(
        InstructionExample,
        without={"id", "project_id", "interaction_id", "status", "cluster", "first_of_question"},
    )

    def listed(columns: list[str], alias: str) -> str:
        return ", ".join(f"{alias}.{column}" for column in columns)

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE copied AS SELECT id AS source_id, gen_random_uuid() AS id "
            "FROM flywheel_interaction WHERE project_id = %s",
            [source.pk],
        )
        cursor.execute(
            f"INSERT INTO flywheel_interaction (id, project_id, {', '.join(interaction_columns)}) "
            f"SELECT copied.id, %s, {listed(interaction_columns, 'source')} "
            "FROM flywheel_interaction AS source JOIN copied ON copied.source_id = source.id",
            [target.pk],
        )
        cursor.execute(
            f"INSERT INTO feedback_rating (interaction_id, {', '.join(rating_columns)}) "
            f"SELECT copied.id, {listed(rating_columns, 'source')} "
            "FROM feedback_rating AS source JOIN copied ON copied.source_id = source.interaction_id"
        )
        cursor.execute(
            "INSERT INTO retrain_instructionexample "
            f"(project_id, interaction_id, status, cluster, {', '.join(example_columns)}) "
            "SELECT %s, copied.id, "
            "CASE WHEN source.status = 'duplicate' THEN 'included' ELSE source.status END, "
            f"source.id, {listed(example_columns, 'source')} "
            "FROM retrain_instructionexample AS source "
            "JOIN copied ON copied.source_id = source.interaction_id",
            [target.pk],
        )
        cursor.execute("DROP TABLE copied")
        for table_name in ("flywheel_interaction", "feedback_rating", "retrain_instructionexample"):
            cursor.execute(f"ANALYZE {table_name}")
    return target


def curation_run(*, project, interaction_ids: list, batch_size: int) -> float:
    """Curate in batches as `manage.py curate` does; returns the Python peak of the last batch,
    traced alone: tracing all of them would triple the time, and a batch holds nothing of the
    ones before it."""
    from retrain.curation.pipeline import interactions_curate

    started = time.perf_counter()
    python_peak = math.nan
    for start in range(0, len(interaction_ids), batch_size):
        batch = interaction_ids[start : start + batch_size]
        if start + batch_size < len(interaction_ids):
            interactions_curate(project=project, interaction_ids=batch)
        else:
            _, python_peak = python_peak_measure(
                lambda batch=batch: interactions_curate(project=project, interaction_ids=batch)
            )
        done = start + len(batch)
        if done % PROGRESS_EVERY < batch_size or done == len(interaction_ids):
            rate = done / (time.perf_counter() - started)
            print(
                f"  curated {done:,}/{len(interaction_ids):,} ({rate:.0f}/s, "
                f"load average {os.getloadavg()[0]:.1f})",
                file=sys.stderr,
            )
    return python_peak


def snapshot_measure(project):
    """dataset_snapshot timed, then taken again with tracemalloc on, after the version it made
    is deleted: the same work, for its Python peak. Returns the version and the measure."""
    from retrain.datasets.snapshot import dataset_snapshot

    (version, _), measure = phase_measure(
        lambda: dataset_snapshot(project=project, trigger="command")
    )
    version.delete()
    (version, _), measure.python_peak_mib = python_peak_measure(
        lambda: dataset_snapshot(project=project, trigger="command")
    )
    return version, measure


def near_duplicate_search_check(*, project) -> tuple[int, float, float]:
    """How well curation's nearest-stored-example search does once everything is curated: for
    one interaction of each distinct question, whether it finds a stored example of the same
    question (distance 0: the true nearest) and whether it finds any within the threshold."""
    from django.db import connection, transaction

    from retrain.curation.dedupe import _stored_nearest
    from retrain.curation.policy import curation_policy_get

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON (interaction.query_text) interaction.id, "
            "interaction.query_embedding::text FROM flywheel_interaction AS interaction "
            "JOIN retrain_instructionexample AS example ON example.interaction_id = interaction.id "
            "WHERE interaction.project_id = %s ORDER BY interaction.query_text, interaction.id",
            [project.pk],
        )
        probes = cursor.fetchall()
    with transaction.atomic():  # the search sets its planner settings for one transaction
        _, found = _stored_nearest(
            project_id=project.pk, questions=probes, searched=list(range(len(probes)))
        )
    distances = np.array([distance for _, distance in found])
    threshold = curation_policy_get(project=project).near_duplicate_threshold
    return len(probes), float((distances < 1e-6).mean()), float((distances <= 1 - threshold).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="rated interactions")
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="interaction ids per interactions_curate call"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=REPOSITORY_ROOT / "var" / "bench-cache",
        help="where the question embeddings are kept for reruns",
    )
    parser.add_argument(
        "--database",
        default=CURATION_BENCH_DATABASE_NAME,
        help="the database to recreate and run on",
    )
    args = parser.parse_args()

    database_url = bench_django_setup(args.database)
    print(machine_context())
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {args.count:,} rated interactions, "
        f"batches of {args.batch_size}"
    )

    from retrain.models import InstructionExample

    questions = questions_catalogue()
    started = time.perf_counter()
    vectors, from_cache = questions_embed(questions, cache_dir=args.cache_dir)
    embed_seconds = time.perf_counter() - started
    started = time.perf_counter()
    project, interaction_ids, kinds = project_load(
        database_url=database_url,
        count=args.count,
        questions=questions,
        vectors=vectors,
        slug="bench",
    )
    embedded = "loaded from the cache" if from_cache else "embedded"
    print(
        f"set-up: {len(questions):,} distinct questions {embedded} in {embed_seconds:.0f} s; "
        f"interactions, ratings and reviews generated and copied in "
        f"{time.perf_counter() - started:.0f} s"
    )
    print("feedback: " + ", ".join(f"{kind} {kinds[kind]:,}" for kind, _ in FEEDBACK_MIX))

    curation_python_peak, curation = phase_measure(
        lambda: curation_run(
            project=project, interaction_ids=interaction_ids, batch_size=args.batch_size
        )
    )
    curation.python_peak_mib = curation_python_peak
    version, snapshot = snapshot_measure(project)
    started = time.perf_counter()
    distinct = project_of_distinct_questions_copy(source=project, slug="bench-distinct")
    print(
        f"set-up of (c): project copied, every example its own cluster, in "
        f"{time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    distinct_version, distinct_snapshot = snapshot_measure(distinct)

    print()
    print(
        table(
            [
                "phase",
                "items",
                "seconds",
                "items/s",
                "RSS at start MiB",
                "peak RSS MiB",
                "Python peak MiB",
            ],
            [
                [
                    name,
                    f"{items:,}",
                    f"{measure.seconds:,.1f}",
                    f"{items / measure.seconds:,.0f}",
                    f"{measure.rss_start_mib:,.0f}",
                    f"{measure.rss_peak_mib:,.0f}",
                    f"{measure.python_peak_mib:,.0f}",
                ]
                for name, items, measure in [
                    ("(a) interactions_curate", len(interaction_ids), curation),
                    ("(b) dataset_snapshot", version.records.count(), snapshot),
                    (
                        "(c) dataset_snapshot, no duplicates",
                        distinct_version.records.count(),
                        distinct_snapshot,
                    ),
                ]
            ],
        )
    )
    print(
        "items: (a) interactions curated, (b) and (c) dataset records written; (c) is a copy "
        "of the project with every example its own cluster's representative. Seconds and peak "
        "RSS (ru_maxrss, its high-water mark reset at the phase's start) without tracemalloc; "
        "Python peak: tracemalloc over (a)'s last batch, and over a repeat of (b) and (c)."
    )

    examples = InstructionExample.objects.filter(project=project)
    by_status = Counter(examples.values_list("status", flat=True))
    clusters = examples.values("cluster").distinct().count()
    print()
    print(table(["status", "examples"], sorted(by_status.items())))
    print(
        f"{clusters:,} clusters; exclusion reasons: "
        + ", ".join(
            f"{reason} {count:,}"
            for reason, count in Counter(
                examples.exclude(exclusion_reason="").values_list("exclusion_reason", flat=True)
            ).most_common()
        )
    )
    probes, same_question, within_threshold = near_duplicate_search_check(project=project)
    print(
        f"near-duplicate search over the curated examples, one probe per distinct question "
        f"({probes:,}): finds a stored example of the same question {same_question:.0%}, one "
        f"within the threshold {within_threshold:.0%}"
    )
    print()
    print(
        f"dataset versions: (b) content hash {version.content_hash[:12]}, "
        f"(c) {distinct_version.content_hash[:12]}"
    )
    print(
        table(
            ["split", "records (b)", "records (c)"],
            [
                [split, count, distinct_version.counts[split]]
                for split, count in version.counts.items()
            ],
        )
    )


if __name__ == "__main__":
    main()
