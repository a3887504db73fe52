"""An instruction example's messages, built by the code that built the serving prompt
(RAFT-style: the retrieved context as it was served, with the passage that holds the answer
among the distractors), PII-scrubbed, and its content hash."""

import hashlib
import re

from flywheel.grounding import groundedness
from flywheel.models import Interaction, VerifiedAnswer
from flywheel.services.chat import prompt_messages_build
from retrain.models import CurationPolicy


def _served_passages(interaction: Interaction) -> list[dict] | None:
    """The context the model saw: None when retrieval was off for this interaction."""
    served_by_us = interaction.source == Interaction.Source.CHAT
    rag_on = interaction.metadata.get("flywheel", {}).get("rag", True)
    if served_by_us:
        return interaction.retrieved if rag_on else None
    return interaction.retrieved or None


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


def scrubber_for(policy: CurationPolicy):
    if not policy.scrub_pii:
        return lambda text: text
    # Imported here: name detection loads a language model, which only curation needs.
    from retrain.curation.pii import pii_scrub

    return pii_scrub


def example_messages_build(
    *, interaction: Interaction, target: str, policy: CurationPolicy
) -> list[dict]:
    """Prompt as served plus the target answer; user and assistant turns PII-scrubbed (the
    system prompt and the knowledge-base context are ours, not the user's)."""
    scrub = scrubber_for(policy)
    prompt = prompt_messages_build(
        project=interaction.project,
        messages=interaction.messages,
        passages=_with_answer_passage(interaction, target, _served_passages(interaction)),
    )
    scrubbed = [
        message
        if message["role"] == "system"
        else {**message, "content": scrub(message["content"])}
        for message in prompt
    ]
    return [*scrubbed, {"role": "assistant", "content": scrub(target)}]


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
