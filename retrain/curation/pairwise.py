"""Preference pairs from reviewers' pairwise judgements of shadow answers: the answer judged
better is `chosen`, the other `rejected`, both to the prompt the interaction was served with
(built, and PII-scrubbed per source, exactly as its instruction example is), in the shape the
DPO export writes (retrain.datasets.exports: prompt, chosen, rejected).

Several reviewers may judge the same shadow answer: the side more of them preferred wins, and
a shadow answer whose votes are level, or that only drew ties, gives no pair. A pair whose two
answers are the same text once scrubbed teaches nothing and is left out, as the snapshot does
with the other pairs; so is one with an empty answer on either side.

Its split follows the question's near-duplicate cluster, so no paraphrase of an eval question
is trained on: the split of the interaction's own example, else that of the nearest curated
question within the policy's near-duplicate threshold, else train.
"""

import hashlib
import uuid
from collections import Counter
from dataclasses import dataclass

from pgvector.django import CosineDistance

from feedback.models import PairwiseJudgement
from flywheel.ml.loading import embed_texts
from flywheel.models import Interaction, Project, ShadowAnswer
from retrain.curation.examples import example_content_hash, example_texts_build
from retrain.curation.policy import curation_policy_get
from retrain.models import CurationPolicy, InstructionExample

PAIRWISE_SIGNAL = "pairwise_judgement"
Preferred = PairwiseJudgement.Preferred


@dataclass(frozen=True)
class PairwisePreference:
    """One preference pair from the judgements of one shadow answer."""

    interaction_id: uuid.UUID
    shadow_answer_id: int
    prompt: list[dict]  # system prompt (with the served context) and the conversation
    chosen: str
    rejected: str
    split: str
    source: str  # the interaction's source, as DatasetRecord.source holds it
    content_hash: str
    judgements: int  # the served or shadow votes behind it (ties not counted)
    signal: str = PAIRWISE_SIGNAL

    def as_dpo_row(self) -> dict:
        """The row the `dpo` export writes for it."""
        return {
            "prompt": [{"role": m["role"], "content": m["content"]} for m in self.prompt],
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
        }


def _winner(votes: Counter) -> str | None:
    served, shadow = votes[Preferred.SERVED], votes[Preferred.SHADOW]
    if served == shadow:
        return None
    return Preferred.SERVED if served > shadow else Preferred.SHADOW


def _split(*, interaction: Interaction, policy: CurationPolicy) -> str:
    own = InstructionExample.objects.filter(interaction=interaction).values_list("split", flat=True)
    if (split := own.first()) is not None:
        return split
    # An app's logged interaction may come without one; curation embeds it the same way.
    embedding = interaction.query_embedding
    if embedding is None:
        [embedding] = embed_texts([interaction.query_text or " "])
    nearest = (
        # One example per distinct question carries the index over question embeddings.
        InstructionExample.objects.filter(project_id=interaction.project_id, first_of_question=True)
        .annotate(distance=CosineDistance("question_embedding", embedding))
        .order_by("distance")
        .values_list("split", "distance")
        .first()
    )
    if nearest is not None and nearest[1] <= 1 - policy.near_duplicate_threshold:
        return nearest[0]
    return InstructionExample.Split.TRAIN


def pairwise_preferences_build(
    *, project: Project, policy: CurationPolicy | None = None, interaction_ids=None
) -> list[PairwisePreference]:
    """The project's preference pairs from pairwise judgements (of the given interactions
    only, when `interaction_ids` is given), oldest shadow answer first."""
    policy = policy or curation_policy_get(project=project)
    judgements = PairwiseJudgement.objects.filter(interaction__project=project)
    if interaction_ids is not None:
        judgements = judgements.filter(interaction_id__in=list(interaction_ids))
    votes: dict[int, Counter] = {}
    for shadow_answer_id, preferred in judgements.values_list("shadow_answer_id", "preferred"):
        votes.setdefault(shadow_answer_id, Counter())[preferred] += 1
    shadow_answers = (
        ShadowAnswer.objects.filter(pk__in=list(votes))
        .select_related("interaction__project")
        .order_by("created_at", "pk")
    )
    pairs = []
    for shadow in shadow_answers:
        winner = _winner(votes[shadow.pk])
        if winner is None:
            continue
        interaction = shadow.interaction
        served, candidate = interaction.response, shadow.response
        chosen, rejected = (
            (served, candidate) if winner == Preferred.SERVED else (candidate, served)
        )
        texts = example_texts_build(
            interaction=interaction,
            target=chosen,
            signal=PAIRWISE_SIGNAL,
            rejected_answer=rejected,
            policy=policy,
        )
        chosen_scrubbed = texts.messages[-1]["content"]
        if not (chosen_scrubbed.strip() and texts.rejected_answer.strip()):
            continue  # an empty answer is no answer to prefer or reject
        if chosen_scrubbed == texts.rejected_answer:
            continue
        content_hash = hashlib.sha256(
            "\x1f".join(
                (example_content_hash(texts.messages), chosen_scrubbed, texts.rejected_answer)
            ).encode()
        ).hexdigest()
        pairs.append(
            PairwisePreference(
                interaction_id=interaction.pk,
                shadow_answer_id=shadow.pk,
                prompt=texts.messages[:-1],
                chosen=chosen_scrubbed,
                rejected=texts.rejected_answer,
                split=_split(interaction=interaction, policy=policy),
                source=interaction.source,
                content_hash=content_hash,
                judgements=votes[shadow.pk][Preferred.SERVED] + votes[shadow.pk][Preferred.SHADOW],
            )
        )
    return pairs
