"""Turn rated and reviewed interactions into instruction examples.

For each interaction: decide from its current ratings and latest review what the policy makes
of it, build the example exactly as the model was prompted when serving (system prompt and
retrieved context included, RAFT-style), scrub PII, and place it in a near-duplicate cluster.
The cluster decides two things: its best-rated member is the only one that enters datasets,
and its split (train or eval) is a stable function of the cluster, so no paraphrase of an
eval question is ever trained on.

Curation of a project runs under a PostgreSQL advisory lock: concurrent workers take turns,
and re-curating an interaction updates its one example, so running anything twice creates
nothing twice.
"""

import hashlib
import re
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Exists, F, Max, OuterRef, Prefetch, Q
from django.utils import timezone
from pgvector.django import CosineDistance

from feedback.models import Interaction, Rating, Review
from flywheel.ml.loading import embed_texts
from flywheel.models import Project
from flywheel.services.chat import prompt_messages_build
from retrain.models import CurationPolicy, InstructionExample

Signal = InstructionExample.Signal
Status = InstructionExample.Status

QUALITY = {
    Signal.REVIEWER_CORRECTION: 50,
    Signal.REVIEWER_APPROVED: 40,
    Signal.USER_CORRECTION: 30,
    Signal.THUMBS_UP: 20,
    Signal.HIGH_SCORE: 10,
    Signal.NONE: 0,
    Signal.NEGATIVE: -10,
}
LOW_SCORE_MAX = 2
CURATION_LOCK_NAMESPACE = 7_340_001  # first key of pg_advisory_xact_lock(int, int)


def curation_policy_get(*, project: Project) -> CurationPolicy:
    policy, _ = CurationPolicy.objects.get_or_create(project=project)
    return policy


@dataclass
class CurationDecision:
    status: str
    signal: str
    target: str  # the answer to train on (for a negative one: the answer that was bad)
    exclusion_reason: str = ""
    rejected_answer: str = ""
    rating: Rating | None = None
    review: Review | None = None

    @property
    def quality(self) -> int:
        return QUALITY[self.signal]


def _excluded(signal: str, reason: str, target: str, **provenance) -> CurationDecision:
    return CurationDecision(
        status=Status.EXCLUDED, signal=signal, target=target, exclusion_reason=reason,
        **provenance,
    )  # fmt: skip


def curation_decide(
    *, interaction: Interaction, ratings: list[Rating], review: Review | None,
    policy: CurationPolicy,
) -> CurationDecision:  # fmt: skip
    """What the policy makes of an interaction. A review outranks end-user ratings."""
    answer = interaction.response
    decision = _decide_by_signal(answer=answer, ratings=ratings, review=review, policy=policy)
    if decision.status != Status.INCLUDED:
        return decision
    if len(interaction.query_text) > policy.max_question_chars:
        return _excluded(decision.signal, "question too long", decision.target)
    if not policy.min_answer_chars <= len(decision.target) <= policy.max_answer_chars:
        return _excluded(decision.signal, "answer length outside the policy", decision.target)
    return decision


def _decide_by_signal(*, answer, ratings, review, policy) -> CurationDecision:
    if review is not None:
        if review.decision == Review.Decision.REJECTED:
            return _excluded(Signal.NEGATIVE, "rejected by a reviewer", answer, review=review)
        if review.decision == Review.Decision.CORRECTED:
            if not policy.prefer_corrections:
                return _excluded(Signal.NEGATIVE, "corrections not used by the policy", answer,
                                 review=review)  # fmt: skip
            return CurationDecision(
                status=Status.INCLUDED, signal=Signal.REVIEWER_CORRECTION,
                target=review.ideal_answer, rejected_answer=answer, review=review,
            )  # fmt: skip
        if policy.include_reviewer_approved:
            return CurationDecision(
                status=Status.INCLUDED, signal=Signal.REVIEWER_APPROVED, target=answer,
                review=review,
            )  # fmt: skip
        return _excluded(Signal.NONE, "approvals not used by the policy", answer, review=review)

    corrections = [r for r in ratings if r.correction.strip()]
    if corrections and policy.prefer_corrections:
        latest = max(corrections, key=lambda r: r.updated_at)
        return CurationDecision(
            status=Status.INCLUDED, signal=Signal.USER_CORRECTION,
            target=latest.correction.strip(), rejected_answer=answer, rating=latest,
        )  # fmt: skip
    ups = [r for r in ratings if r.thumb == "up"]
    downs = [r for r in ratings if r.thumb == "down"]
    scores = [r.score for r in ratings if r.score is not None]
    mean_score = sum(scores) / len(scores) if scores else None
    if len(downs) > len(ups) and policy.exclude_thumbs_down_without_correction:
        return _excluded(Signal.NEGATIVE, "thumbs down without a correction", answer,
                         rating=downs[-1])  # fmt: skip
    if len(ups) > len(downs) and policy.include_thumbs_up:
        return CurationDecision(
            status=Status.INCLUDED, signal=Signal.THUMBS_UP, target=answer, rating=ups[-1]
        )
    if mean_score is not None and policy.min_score and mean_score >= policy.min_score:
        best = max((r for r in ratings if r.score is not None), key=lambda r: r.score)
        return CurationDecision(
            status=Status.INCLUDED, signal=Signal.HIGH_SCORE, target=answer, rating=best
        )
    if mean_score is not None and mean_score <= LOW_SCORE_MAX:
        return _excluded(Signal.NEGATIVE, "low score", answer)
    return _excluded(Signal.NONE, "no qualifying signal", answer)


def _served_passages(interaction: Interaction) -> list[dict] | None:
    """The context the model saw: None when retrieval was off for this interaction."""
    served_by_us = interaction.source == Interaction.Source.CHAT
    rag_on = interaction.metadata.get("flywheel", {}).get("rag", True)
    if served_by_us:
        return interaction.retrieved if rag_on else None
    return interaction.retrieved or None


def _scrubber(policy: CurationPolicy):
    if not policy.scrub_pii:
        return lambda text: text
    # Imported here: name detection loads a language model, which only curation needs.
    from retrain.pii import pii_scrub

    return pii_scrub


def example_messages_build(
    *, interaction: Interaction, target: str, policy: CurationPolicy
) -> list[dict]:
    """Prompt as served plus the target answer; user and assistant turns PII-scrubbed (the
    system prompt and the knowledge-base context are ours, not the user's)."""
    scrub = _scrubber(policy)
    prompt = prompt_messages_build(
        project=interaction.project,
        messages=interaction.messages,
        passages=_served_passages(interaction),
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


def split_for_cluster(*, project_id: int, cluster: int, eval_fraction: float) -> str:
    """A stable pseudo-random draw per cluster: the same cluster always lands in the same
    split, whatever order examples arrive in."""
    digest = hashlib.sha256(f"{project_id}:{cluster}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    return InstructionExample.Split.EVAL if draw < eval_fraction else InstructionExample.Split.TRAIN


@dataclass
class CurationSummary:
    curated: int = 0
    removed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


def _lock_project(project_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)", [CURATION_LOCK_NAMESPACE, project_id]
        )


def _cluster_for(*, example: InstructionExample, policy: CurationPolicy) -> int | None:
    """The cluster of an exact duplicate, else of the nearest question within the threshold."""
    others = InstructionExample.objects.filter(project_id=example.project_id).exclude(pk=example.pk)
    exact = others.filter(content_hash=example.content_hash).values_list("cluster", flat=True)
    if exact:
        return exact[0]
    nearest = (
        others.annotate(distance=CosineDistance("question_embedding", example.question_embedding))
        .filter(distance__lte=1 - policy.near_duplicate_threshold)
        .order_by("distance")
        .values_list("cluster", flat=True)[:1]
    )
    return nearest[0] if nearest else None


def _elect_representative(*, project_id: int, cluster: int) -> None:
    """The best example of a cluster is included; the other eligible ones are duplicates."""
    eligible = InstructionExample.objects.filter(
        project_id=project_id, cluster=cluster, status__in=[Status.INCLUDED, Status.DUPLICATE]
    ).order_by("-quality", "pk")
    best = eligible.values_list("pk", flat=True).first()
    if best is None:
        return
    eligible.exclude(pk=best).exclude(status=Status.DUPLICATE).update(status=Status.DUPLICATE)
    eligible.filter(pk=best).exclude(status=Status.INCLUDED).update(status=Status.INCLUDED)


def _interactions_with_feedback(interaction_ids) -> list[Interaction]:
    return list(
        Interaction.objects.filter(pk__in=list(interaction_ids))
        .select_related("project", "instruction_example")
        .prefetch_related(
            "ratings",
            Prefetch("reviews", queryset=Review.objects.order_by("-created_at", "-pk")),
        )
    )


def interactions_curate(*, project: Project, interaction_ids) -> CurationSummary:
    """Curate the given interactions of `project` (idempotent; safe to run concurrently)."""
    policy = curation_policy_get(project=project)
    summary = CurationSummary()
    interactions = [i for i in _interactions_with_feedback(interaction_ids)
                    if i.project_id == project.pk]  # fmt: skip
    missing_embeddings = [i for i in interactions if i.query_embedding is None]
    if missing_embeddings:
        vectors = embed_texts([i.query_text or " " for i in missing_embeddings])
        for interaction, vector in zip(missing_embeddings, vectors, strict=True):
            interaction.query_embedding = vector
            Interaction.objects.filter(pk=interaction.pk).update(query_embedding=vector)

    with transaction.atomic():
        _lock_project(project.pk)
        touched_clusters: set[int] = set()
        for interaction in interactions:
            ratings = list(interaction.ratings.all())
            reviews = list(interaction.reviews.all())
            existing = InstructionExample.objects.filter(interaction=interaction).first()
            if not ratings and not reviews:
                if existing:
                    touched_clusters.add(existing.cluster)
                    existing.delete()
                    summary.removed += 1
                continue
            decision = curation_decide(
                interaction=interaction, ratings=ratings,
                review=reviews[0] if reviews else None, policy=policy,
            )  # fmt: skip
            example = _example_save(
                existing=existing, interaction=interaction, decision=decision, policy=policy
            )
            touched_clusters.add(example.cluster)
            summary.curated += 1
            summary.by_status[decision.status] = summary.by_status.get(decision.status, 0) + 1
        for cluster in touched_clusters:
            _elect_representative(project_id=project.pk, cluster=cluster)
    return summary


def _example_save(*, existing, interaction, decision, policy) -> InstructionExample:
    scrub = _scrubber(policy)
    messages = example_messages_build(
        interaction=interaction, target=decision.target, policy=policy
    )
    example = existing or InstructionExample(project_id=interaction.project_id,
                                             interaction=interaction)  # fmt: skip
    example.status = decision.status
    example.signal = decision.signal
    example.exclusion_reason = decision.exclusion_reason
    example.messages = messages
    example.rejected_answer = scrub(decision.rejected_answer) if decision.rejected_answer else ""
    example.rating = decision.rating
    example.review = decision.review
    example.content_hash = example_content_hash(messages)
    example.question_embedding = interaction.query_embedding
    example.quality = decision.quality
    example.curated_at = timezone.now()
    if existing is None:
        example.cluster = 0  # placeholder until the row has an id
        example.split = InstructionExample.Split.TRAIN
        example.save()
        example.cluster = _cluster_for(example=example, policy=policy) or example.pk
    example.split = split_for_cluster(
        project_id=interaction.project_id, cluster=example.cluster,
        eval_fraction=policy.eval_fraction,
    )  # fmt: skip
    example.save()
    return example


def interaction_curate(*, interaction_id) -> CurationSummary | None:
    project_id = (
        Interaction.objects.filter(pk=interaction_id).values_list("project_id", flat=True).first()
    )
    if project_id is None:
        return None
    return interactions_curate(
        project=Project.objects.get(pk=project_id), interaction_ids=[interaction_id]
    )


def interactions_needing_curation(*, limit: int = 5000) -> dict[int, list]:
    """Interactions whose feedback changed after they were last curated, or that were never
    curated: their curation task was lost. Grouped by project id."""
    curated_at = F("instruction_example__curated_at")
    stale = (
        Interaction.objects.filter(
            Exists(Rating.objects.filter(interaction=OuterRef("pk")))
            | Exists(Review.objects.filter(interaction=OuterRef("pk")))
        )
        .annotate(last_rating=Max("ratings__updated_at"), last_review=Max("reviews__created_at"))
        .filter(
            Q(instruction_example__isnull=True)
            | Q(last_rating__gt=curated_at)
            | Q(last_review__gt=curated_at)
        )
        .values_list("project_id", "pk")[:limit]
    )
    grouped: dict[int, list] = {}
    for project_id, interaction_id in stale:
        grouped.setdefault(project_id, []).append(interaction_id)
    return grouped
