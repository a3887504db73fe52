"""An instruction example's messages, built by the code that built the serving prompt
(RAFT-style: the retrieved context as it was served, with the passage that holds the answer
among the distractors) or, for an interaction an app logged, its messages as logged;
PII-scrubbed per source, and its content hash."""

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

from flywheel.grounding import groundedness
from flywheel.models import Interaction, VerifiedAnswer
from flywheel.services.chat import prompt_messages_build
from retrain.curation.pii import pii_entities_normalise, pii_scrub_counted
from retrain.models import CurationPolicy, InstructionExample


def _served_passages(interaction: Interaction) -> list[dict] | None:
    """The context the model saw: None when retrieval was off for this interaction."""
    rag_on = interaction.metadata.get("flywheel", {}).get("rag", True)
    return interaction.retrieved if rag_on else None


# A passage "holds" the answer when it contains this share of the answer's content words.
HOLDS_ANSWER_GROUNDEDNESS = 0.5


def _with_answer_passage(
    interaction: Interaction, target: str, passages: list[dict] | None
) -> list[dict] | None:
    """RAFT: the model learns to answer from the passage that holds the answer, among the
    served ones as distractors. When no served passage holds the target (retrieval missed it),
    the passage a verified answer rests on is put first, so the example does not teach the
    model to answer without its evidence."""
    if not passages:
        return passages
    if any(
        groundedness(answer=target, passages=[passage.get("text", "")]) >= HOLDS_ANSWER_GROUNDEDNESS
        for passage in passages
    ):
        return passages
    verified = (
        VerifiedAnswer.objects.filter(
            interaction=interaction, status=VerifiedAnswer.Status.ACTIVE, answer=target
        )
        .only("evidence")
        .first()
    )
    if verified is None or not verified.evidence:
        return passages
    return [
        {**passage, "rank": rank}
        for rank, passage in enumerate([verified.evidence[0], *passages], start=1)
    ]


class ExampleScrubber:
    """Scrubs each text of an example by the kinds the policy chose for its source (see
    `PII_SOURCES`), and counts what it replaced per kind."""

    def __init__(self, policy: CurationPolicy):
        self.enabled = policy.scrub_pii
        self.kinds_by_source = pii_entities_normalise(policy.pii_entities)
        self.scrub_private_ips = policy.scrub_private_ips
        self.replaced: Counter[str] = Counter()

    def scrub(self, text: str, *, source: str) -> str:
        if not self.enabled:
            return text
        scrubbed, replaced = pii_scrub_counted(
            text,
            kinds=self.kinds_by_source[source],
            scrub_private_ips=self.scrub_private_ips,
        )
        self.replaced.update(replaced)
        return scrubbed


# The source whose PII rules a turn of a conversation follows; system and developer messages
# are instructions (ours, or the app's own) and stay as they were.
_SOURCE_OF_ROLE = {"assistant": "model_answers", "user": "user_messages", "tool": "user_messages"}
_CORRECTION_SIGNALS = {
    InstructionExample.Signal.REVIEWER_CORRECTION,
    InstructionExample.Signal.USER_CORRECTION,
}


@dataclass(frozen=True)
class ExampleTexts:
    messages: list[dict]
    rejected_answer: str
    pii_scrubbed: dict[str, int]


def _prompt(interaction: Interaction, target: str) -> list[dict]:
    """What the model answering was prompted with. A logged interaction was answered by the
    app's own LLM: its messages, system prompt and any context in them, are the prompt
    exactly as logged, never our template."""
    if interaction.source == Interaction.Source.LOG:
        return [dict(message) for message in interaction.messages]
    return prompt_messages_build(
        project=interaction.project,
        messages=interaction.messages,
        passages=_with_answer_passage(interaction, target, _served_passages(interaction)),
    )


def example_texts_build(
    *,
    interaction: Interaction,
    target: str,
    signal: str,
    rejected_answer: str,
    policy: CurationPolicy,
) -> ExampleTexts:
    """The prompt plus the target answer, and the answer it replaced, each text PII-scrubbed by
    the rules of its source: end-user turns, model answers, or corrections."""
    scrubber = ExampleScrubber(policy)
    prompt = [
        {**message, "content": scrubber.scrub(message["content"], source=source)}
        if (source := _SOURCE_OF_ROLE.get(message["role"]))
        else message
        for message in _prompt(interaction, target)
    ]
    target_source = "corrections" if signal in _CORRECTION_SIGNALS else "model_answers"
    answer = {"role": "assistant", "content": scrubber.scrub(target, source=target_source)}
    rejected = scrubber.scrub(rejected_answer, source="model_answers") if rejected_answer else ""
    return ExampleTexts(
        messages=[*prompt, answer],
        rejected_answer=rejected,
        pii_scrubbed=dict(sorted(scrubber.replaced.items())),
    )


_WHITESPACE = re.compile(r"\s+")


def example_content_hash(messages: list[dict]) -> str:
    """Equal for examples that say the same thing: the conversation turns and the answer,
    lower-cased with whitespace collapsed (the system prompt is left out)."""
    turns = [
        f"{m['role']}:{_WHITESPACE.sub(' ', m['content']).strip().lower()}"
        for m in messages
        if m["role"] != "system"
    ]
    return hashlib.sha256("\n".join(turns).encode()).hexdigest()
