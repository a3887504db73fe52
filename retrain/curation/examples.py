"""An instruction example's messages, built by the code that built the serving prompt
(RAFT-style: the retrieved context as it was served, with the passage that holds the answer
among the distractors) or, for an interaction an app logged, its messages as logged;
PII-scrubbed per source, and its content hash.

A batch is built by one `ExampleBuilder`, which does each piece of work once per distinct
input: popular questions come back thousands of times with the same passages and the same
few answers, so the prompt of a (conversation, passages) pair is built, scrubbed and
serialised once, a text is scrubbed once (`pii_scrub_cached`), and whether the served
passages hold an answer is measured once per (answer, passages).
"""

import functools
import hashlib
import json
import re
import threading
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from django.db import connection

from flywheel.grounding import _content_tokens as content_tokens
from flywheel.models import Interaction, Project, VerifiedAnswer
from flywheel.services.chat import prompt_messages_build
from retrain.curation.pii import pii_entities_normalise, pii_scrub_cached
from retrain.models import CurationPolicy, InstructionExample


def _served_passages(interaction: Interaction) -> list[dict] | None:
    """The context the model saw: None when retrieval was off for this interaction."""
    return interaction.retrieved if _rag_on(interaction.metadata) else None


def _rag_on(metadata: dict) -> bool:
    return bool(metadata.get("flywheel", {}).get("rag", True))


# A passage "holds" the answer when it contains this share of the answer's content words.
HOLDS_ANSWER_GROUNDEDNESS = 0.5


class ExampleScrubber:
    """Scrubs each text of an example by the kinds the policy chose for its source (see
    `PII_SOURCES`), and counts what it replaced per kind."""

    def __init__(self, policy: CurationPolicy):
        self.enabled = policy.scrub_pii
        self.kinds_by_source = {
            source: tuple(kinds)
            for source, kinds in pii_entities_normalise(policy.pii_entities).items()
        }
        self.scrub_private_ips = policy.scrub_private_ips
        self.replaced: Counter[str] = Counter()

    def scrub_counted(self, text: str, *, source: str) -> tuple[str, tuple[tuple[str, int], ...]]:
        """The scrubbed text and what was replaced in it, (kind, count) pairs."""
        if not self.enabled:
            return text, ()
        return pii_scrub_cached(
            text, kinds=self.kinds_by_source[source], scrub_private_ips=self.scrub_private_ips
        )

    def scrub(self, text: str, *, source: str) -> str:
        scrubbed, replaced = self.scrub_counted(text, source=source)
        self.replaced.update(dict(replaced))
        return scrubbed


# The source whose PII rules a turn of a conversation follows; system and developer messages
# are instructions (ours, or the app's own) and stay as they were.
_SOURCE_OF_ROLE = {"assistant": "model_answers", "user": "user_messages", "tool": "user_messages"}
_CORRECTION_SIGNALS = {
    InstructionExample.Signal.REVIEWER_CORRECTION,
    InstructionExample.Signal.USER_CORRECTION,
}


class InteractionRow(NamedTuple):
    """What curation reads of an interaction, its JSON left as the database's text: equal
    text is equal content, and only distinct texts are parsed."""

    id: uuid.UUID
    source: str
    messages_json: str
    query_text: str
    response: str
    retrieved_json: str
    rag: bool  # retrieval was on: the model saw `retrieved` as its context
    query_embedding: str  # pgvector's text form


@dataclass(frozen=True)
class CuratedTexts:
    messages_json: str  # the prompt plus the target answer
    rejected_answer: str
    pii_scrubbed: dict[str, int]
    content_hash: str


@dataclass(frozen=True)
class _ScrubbedPrompt:
    json_items: str  # the scrubbed messages as a JSON array, without its brackets
    hashed_turns: tuple[str, ...]  # the non-system turns as the content hash reads them
    replaced: Counter[str]


_WHITESPACE = re.compile(r"\s+")


def _hashed_turn(role: str, content: str) -> str:
    return f"{role}:{_WHITESPACE.sub(' ', content).strip().lower()}"


def example_content_hash(messages: list[dict]) -> str:
    """Equal for examples that say the same thing: the conversation turns and the answer,
    lower-cased with whitespace collapsed (the system prompt is left out)."""
    turns = [_hashed_turn(m["role"], m["content"]) for m in messages if m["role"] != "system"]
    return hashlib.sha256("\n".join(turns).encode()).hexdigest()


PARSED_PASSAGES_CACHE_SIZE = 5_000


@functools.lru_cache(maxsize=PARSED_PASSAGES_CACHE_SIZE)
def _passages_parse(retrieved_json: str) -> list[dict]:
    """Served passages, parsed once per distinct text across batches; not to be modified."""
    return json.loads(retrieved_json)


# Whether served passages hold an answer is measured once per distinct (answer, passages) in
# a process: popular questions come back with the same passages and the same few answers.
HOLDS_ANSWER_CACHE_SIZE = 20_000


@functools.lru_cache(maxsize=HOLDS_ANSWER_CACHE_SIZE)
def _passages_hold_answer(answer: str, retrieved_json: str) -> bool:
    """Whether one of the passages grounds the answer at the threshold (`groundedness`), each
    text's content words read once: the same few passages serve thousands of questions."""
    answer_words = _content_words(answer)
    if not answer_words:
        return False  # groundedness 0.0: nothing shown grounded
    for passage in _passages_parse(retrieved_json):
        passage_words = frozenset(_content_words(passage.get("text", "")))
        found = sum(1 for word in answer_words if word in passage_words)
        if found / len(answer_words) >= HOLDS_ANSWER_GROUNDEDNESS:
            return True
    return False


@functools.lru_cache(maxsize=HOLDS_ANSWER_CACHE_SIZE)
def _content_words(text: str) -> tuple[str, ...]:
    return tuple(content_tokens(text))


# Prompts built and scrubbed, by what they depend on, across batches: a popular question's
# prompt (system prompt, served context, conversation) is built once per process. Least
# recently used first out; a prompt with its context is a few KiB.
SCRUBBED_PROMPTS_CACHE_SIZE = 5_000
_scrubbed_prompts: OrderedDict[tuple, _ScrubbedPrompt] = OrderedDict()
_scrubbed_prompts_lock = threading.Lock()


class ExampleBuilder:
    """Builds the examples of one batch of interactions of `project`."""

    def __init__(self, *, project: Project, policy: CurationPolicy, interaction_ids: list):
        self.project = project
        self.scrubber = ExampleScrubber(policy)
        # (interaction, answer) -> the evidence of its active verified answer, read at once
        # for the batch; the lowest id first, as a lookup by answer would find it.
        self._evidence: dict[tuple[uuid.UUID, str], list] = {}
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT interaction_id, answer, evidence::text "
                f"FROM {VerifiedAnswer._meta.db_table} "
                "WHERE interaction_id = ANY(%s::uuid[]) AND status = %s ORDER BY id",
                [interaction_ids, VerifiedAnswer.Status.ACTIVE],
            )
            for interaction_id, answer, evidence in cursor.fetchall():
                self._evidence.setdefault((interaction_id, answer), json.loads(evidence))
        # What a prompt depends on besides its interaction's texts.
        self._prompt_context = (
            project.pk,
            project.system_prompt,
            self.scrubber.enabled,
            tuple(self.scrubber.kinds_by_source.items()),
            self.scrubber.scrub_private_ips,
        )

    def build(
        self, row: InteractionRow, *, target: str, signal: str, rejected_answer: str
    ) -> CuratedTexts:
        """The prompt plus the target answer, and the answer it replaced, each text
        PII-scrubbed by the rules of its source: end-user turns, model answers, or
        corrections."""
        prompt = self._scrubbed_prompt(row, target)
        target_source = "corrections" if signal in _CORRECTION_SIGNALS else "model_answers"
        answer, answer_replaced = self.scrubber.scrub_counted(target, source=target_source)
        rejected, rejected_replaced = (
            self.scrubber.scrub_counted(rejected_answer, source="model_answers")
            if rejected_answer
            else ("", ())
        )
        replaced = prompt.replaced.copy()
        replaced.update(dict(answer_replaced))
        replaced.update(dict(rejected_replaced))
        answer_json = json.dumps({"role": "assistant", "content": answer})
        items = f"{prompt.json_items}, {answer_json}" if prompt.json_items else answer_json
        turns = "\n".join([*prompt.hashed_turns, _hashed_turn("assistant", answer)])
        return CuratedTexts(
            messages_json=f"[{items}]",
            rejected_answer=rejected,
            pii_scrubbed=dict(sorted(replaced.items())),
            content_hash=hashlib.sha256(turns.encode()).hexdigest(),
        )

    def _scrubbed_prompt(self, row: InteractionRow, target: str) -> _ScrubbedPrompt:
        if row.source == Interaction.Source.LOG:
            key: tuple = (row.source, row.messages_json)
        else:
            key = (row.source, row.messages_json, row.retrieved_json if row.rag else None)
            evidence = self._answer_evidence(row, target)
            if evidence is not None:
                key += (json.dumps(evidence, sort_keys=True),)
        key = (self._prompt_context, key)
        with _scrubbed_prompts_lock:
            prompt = _scrubbed_prompts.get(key)
            if prompt is not None:
                _scrubbed_prompts.move_to_end(key)
                return prompt
        prompt = self._scrub(self._prompt(row, target))
        with _scrubbed_prompts_lock:
            _scrubbed_prompts[key] = prompt
            while len(_scrubbed_prompts) > SCRUBBED_PROMPTS_CACHE_SIZE:
                _scrubbed_prompts.popitem(last=False)
        return prompt

    def _prompt(self, row: InteractionRow, target: str) -> list[dict]:
        """What the model answering was prompted with. A logged interaction was answered by
        the app's own LLM: its messages, system prompt and any context in them, are the
        prompt exactly as logged, never our template."""
        messages = json.loads(row.messages_json)
        if row.source == Interaction.Source.LOG:
            return messages
        passages = self._served_passages(row)
        evidence = self._answer_evidence(row, target)
        if evidence is not None:
            assert passages is not None  # evidence is only looked for among served passages
            passages = [
                {**passage, "rank": rank}
                for rank, passage in enumerate([evidence, *passages], start=1)
            ]
        return prompt_messages_build(project=self.project, messages=messages, passages=passages)

    def _served_passages(self, row: InteractionRow) -> list[dict] | None:
        """The context the model saw: None when retrieval was off for this interaction."""
        return _passages_parse(row.retrieved_json) if row.rag else None

    def _answer_evidence(self, row: InteractionRow, target: str) -> dict | None:
        """RAFT: the model learns to answer from the passage that holds the answer, among the
        served ones as distractors. When no served passage holds the target (retrieval missed
        it), the passage a verified answer rests on is put first, so the example does not
        teach the model to answer without its evidence: that passage, or None."""
        if not self._served_passages(row) or _passages_hold_answer(target, row.retrieved_json):
            return None
        evidence = self._evidence.get((row.id, target))
        return evidence[0] if evidence else None

    def _scrub(self, prompt: list[dict]) -> _ScrubbedPrompt:
        replaced: Counter[str] = Counter()
        scrubbed = []
        for message in prompt:
            source = _SOURCE_OF_ROLE.get(message["role"])
            if source:
                content, found = self.scrubber.scrub_counted(message["content"], source=source)
                replaced.update(dict(found))
                message = {**message, "content": content}
            scrubbed.append(message)
        return _ScrubbedPrompt(
            json_items=json.dumps(scrubbed)[1:-1],
            hashed_turns=tuple(
                _hashed_turn(m["role"], m["content"]) for m in scrubbed if m["role"] != "system"
            ),
            replaced=replaced,
        )


@dataclass(frozen=True)
class ExampleTexts:
    messages: list[dict]
    rejected_answer: str
    pii_scrubbed: dict[str, int]


def example_texts_build(
    *,
    interaction: Interaction,
    target: str,
    signal: str,
    rejected_answer: str,
    policy: CurationPolicy,
) -> ExampleTexts:
    """The texts of one interaction's example, built as a batch of curation builds them."""
    row = InteractionRow(
        id=interaction.pk,
        source=interaction.source,
        messages_json=json.dumps(interaction.messages),
        query_text=interaction.query_text,
        response=interaction.response,
        retrieved_json=json.dumps(interaction.retrieved),
        rag=_rag_on(interaction.metadata),
        query_embedding="",
    )
    builder = ExampleBuilder(
        project=interaction.project, policy=policy, interaction_ids=[interaction.pk]
    )
    texts = builder.build(row, target=target, signal=signal, rejected_answer=rejected_answer)
    return ExampleTexts(
        messages=json.loads(texts.messages_json),
        rejected_answer=texts.rejected_answer,
        pii_scrubbed=texts.pii_scrubbed,
    )


@dataclass(slots=True)
class CuratedExample:
    """An example as a batch curates it: the row it writes, new or over a stored one."""

    interaction_id: uuid.UUID
    question_embedding: str  # pgvector's text form, as read from the interaction
    status: str
    signal: str
    exclusion_reason: str
    quality: int
    rating_id: int | None
    review_id: int | None
    texts: CuratedTexts
    pk: int = 0  # a stored example's; clustering reserves a new one's
    cluster: int = 0  # a stored example's; clustering sets a new one's
    split: str = ""
    first_of_question: bool = False

    @property
    def content_hash(self) -> str:
        return self.texts.content_hash


class StoredExample(NamedTuple):
    """What a batch reads of an interaction's example stored before it."""

    pk: int
    status: str
    cluster: int
    first_of_question: bool
