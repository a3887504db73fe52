"""Verified answers: approved corrections served for their question and for questions that
ask the same thing.

Raw embedding similarity is a weak judge of "the same question" on real documentation: a
paraphrase may score 0.5 against its original while a question about another fact of the same
page scores 0.9. So a match takes two checks:
1. similarity: the question's embedding (by the retriever of the active index, fine-tuned on
   feedback when one is promoted) against the verified question's, at or above a threshold;
2. evidence: a passage the verified answer rests on (or the FAQ entry the index refresh made of
   it) is among the question's own top passages, so both questions lead to the same place.

The threshold is calibrated per project (`verified_answers_calibrate`): the lowest value at
which at most the policy's false-match rate of verified questions would be matched, under both
checks, by another verified question with a different answer. Distinct verified questions of
one project are the hardest negatives there are (same product, same pages, other facts).
"""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.db import transaction
from django.utils import timezone
from pgvector.django import CosineDistance

from flywheel.grounding import groundedness
from flywheel.ml.loading import embed_texts
from flywheel.models import (
    Chunk,
    Document,
    IndexVersion,
    Interaction,
    Project,
    ServingPolicy,
    VerifiedAnswer,
)
from flywheel.selectors.retrieval import (
    RetrievalOptions,
    RetrievedChunk,
    active_index_version,
    retrieve,
)
from flywheel.services.indexing import embedding_model_name

# Before a project has enough verified answers to calibrate on: a paraphrase of the bench's
# training questions scores a median 0.70 with the bundled model, distinct facts of one page
# up to 0.96; the evidence check carries the rest.
DEFAULT_MATCH_THRESHOLD = 0.80
MIN_QUESTIONS_TO_CALIBRATE = 8
SAME_QUESTION_SIMILARITY = 0.98
# The calibrated threshold stays within these bounds whatever the data says. The floor is
# measured (bench/verified_match.py): distinct verified questions rarely pass the evidence
# check, so the calibration alone settles near 0.55, where a quarter of unseen questions on
# the man-page corpus still matched; at 0.65 it was 7 %, with 41 % of paraphrases matched.
THRESHOLD_FLOOR, THRESHOLD_CEILING = 0.65, 0.97
# A passage holds the answer when this share of the answer's content words is in it.
EVIDENCE_MIN_GROUNDEDNESS = 0.5
EVIDENCE_PASSAGES_KEPT = 2
MATCH_CANDIDATES = 5

_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class VerifiedMatch:
    verified_answer: VerifiedAnswer
    similarity: float
    threshold: float
    evidence_rank: int | None  # where the evidence ranked among the question's passages


def serving_policy_get(*, project: Project) -> ServingPolicy:
    policy, _ = ServingPolicy.objects.get_or_create(project=project)
    return policy


def retriever_path(*, index_version: IndexVersion | None) -> str:
    """The embedding model that embedded `index_version` (queries must use the same one)."""
    if index_version is not None and index_version.embedding_model:
        return index_version.embedding_model
    return embedding_model_name()


def _normalised(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def _evidence_passages(*, project: Project, answer: str, served: list[dict]) -> list[dict]:
    """The passages that hold `answer`: among those served with the corrected interaction and
    those the active index finds for the answer itself, the ones that contain most of its
    content words."""
    candidates = [p for p in served if p.get("text")]
    index_version = active_index_version(project=project)
    if index_version is not None:
        found = retrieve(
            project=project,
            query=answer,
            options=RetrievalOptions(top_k=EVIDENCE_PASSAGES_KEPT + 3),
            index_version=index_version,
            embedding_model=retriever_path(index_version=index_version),
        )
        candidates += [
            chunk.as_log_entry(index_version_id=index_version.pk)
            for chunk in found.chunks
            if chunk.kind == Chunk.Kind.DOCUMENT
        ]
    scored, seen = [], set()
    for passage in candidates:
        key = _normalised(passage["text"])
        if key in seen:
            continue
        seen.add(key)
        score = groundedness(answer=answer, passages=[passage["text"]])
        if score >= EVIDENCE_MIN_GROUNDEDNESS:
            scored.append((score, passage))
    scored.sort(key=lambda item: -item[0])
    return [
        {key: passage.get(key) for key in ("document_id", "title", "source_uri", "heading", "text")}
        for _, passage in scored[:EVIDENCE_PASSAGES_KEPT]
    ]


def verified_answer_publish(
    *, interaction: Interaction, review_id: int, answer: str
) -> VerifiedAnswer:
    """Make `answer` the verified answer to `interaction`'s question, replacing an earlier one
    (a revised review makes a new verified answer; the old one is withdrawn)."""
    project = interaction.project
    evidence = _evidence_passages(project=project, answer=answer, served=interaction.retrieved)
    document_ids = {p["document_id"] for p in evidence if p.get("document_id")}
    source_documents = {
        str(pk): content_hash
        for pk, content_hash in Document.objects.filter(pk__in=document_ids).values_list(
            "pk", "content_hash"
        )
    }
    model = retriever_path(index_version=active_index_version(project=project))
    embedding = embed_texts([interaction.query_text], path=Path(model))[0]
    with transaction.atomic():
        verified_answers_withdraw(
            interaction=interaction, reason=f"superseded by review {review_id}"
        )
        return VerifiedAnswer.objects.create(
            project=project,
            interaction=interaction,
            review_id=review_id,
            question=interaction.query_text,
            answer=answer,
            evidence=evidence,
            source_documents=source_documents,
            question_embedding=embedding,
            embedding_model=model,
            approved_at=timezone.now(),
        )


def verified_answers_withdraw(*, interaction: Interaction, reason: str) -> int:
    """Stop serving the verified answers of `interaction` (active or stale)."""
    return (
        VerifiedAnswer.objects.filter(interaction=interaction)
        .exclude(status=VerifiedAnswer.Status.WITHDRAWN)
        .update(status=VerifiedAnswer.Status.WITHDRAWN, status_reason=reason[:300])
    )


def verified_answers_mark_stale(*, document: Document) -> int:
    """A document changed: the active verified answers resting on an earlier version of it
    are no longer served until a reviewer looks at them again."""
    key = str(document.pk)
    stale = [
        verified.pk
        for verified in VerifiedAnswer.objects.filter(
            project=document.project_id,
            status=VerifiedAnswer.Status.ACTIVE,
            source_documents__has_key=key,
        ).only("pk", "source_documents")
        if verified.source_documents[key] != document.content_hash
    ]
    return VerifiedAnswer.objects.filter(pk__in=stale).update(
        status=VerifiedAnswer.Status.STALE,
        status_reason=f"document {document.pk} ({document.source_uri[:200]}) changed",
    )


def verified_answers_reembed(*, project: Project, embedding_model: str) -> int:
    """Embed the verified questions with `embedding_model` (the retriever of a new index
    version) where they were embedded with another one."""
    outdated = list(
        VerifiedAnswer.objects.filter(project=project)
        .exclude(status=VerifiedAnswer.Status.WITHDRAWN)
        .exclude(embedding_model=embedding_model)
        .only("pk", "question")
    )
    if not outdated:
        return 0
    vectors = embed_texts([v.question for v in outdated], path=Path(embedding_model))
    for verified, vector in zip(outdated, vectors, strict=True):
        verified.question_embedding = vector
        verified.embedding_model = embedding_model
    VerifiedAnswer.objects.bulk_update(outdated, ["question_embedding", "embedding_model"])
    return len(outdated)


def _evidence_rank(
    verified: VerifiedAnswer, chunks: list[RetrievedChunk], *, depth: int
) -> int | None:
    """The rank of the first of the question's top `depth` passages that is the verified
    answer's evidence or its FAQ entry; None when none is."""
    evidence_texts = {_normalised(p["text"]) for p in verified.evidence if p.get("text")}
    for chunk in chunks[:depth]:
        if chunk.review_id is not None and chunk.review_id == verified.review_id:
            return chunk.rank
        if _normalised(chunk.text) in evidence_texts:
            return chunk.rank
    return None


def match_threshold(policy: ServingPolicy) -> float:
    if policy.verified_match_threshold is not None:
        return policy.verified_match_threshold
    if policy.calibrated_threshold is not None:
        return policy.calibrated_threshold
    return DEFAULT_MATCH_THRESHOLD


def verified_answer_match(
    *,
    project: Project,
    query_embedding: np.ndarray,
    embedding_model: str,
    chunks: list[RetrievedChunk],
    policy: ServingPolicy,
) -> VerifiedMatch | None:
    """The active verified answer that answers this question, if one does (see the module
    docstring); `chunks` are the question's retrieved passages, best first."""
    threshold = match_threshold(policy)
    candidates = (
        VerifiedAnswer.objects.filter(
            project=project,
            status=VerifiedAnswer.Status.ACTIVE,
            embedding_model=embedding_model,
        )
        .annotate(distance=CosineDistance("question_embedding", query_embedding))
        .order_by("distance")[:MATCH_CANDIDATES]
    )
    for verified in candidates:
        similarity = 1.0 - float(verified.distance)
        if similarity < threshold:
            break
        depth = policy.verified_match_evidence_depth
        rank = _evidence_rank(verified, chunks, depth=depth) if depth else None
        # The verified question itself (or one that differs in case or spacing) needs no
        # evidence: it asks what the reviewer answered, even when retrieval missed the page.
        same_question = similarity >= SAME_QUESTION_SIMILARITY
        if depth and verified.evidence and rank is None and not same_question:
            continue
        return VerifiedMatch(
            verified_answer=verified,
            similarity=similarity,
            threshold=threshold,
            evidence_rank=rank,
        )
    return None


def verified_answers_calibrate(*, project: Project) -> ServingPolicy:
    """Calibrate the match threshold on the project's own verified questions (module
    docstring) and record how: the number of questions, the target rate and the quantiles of
    the similarity each question has with its closest other verified question that passes the
    evidence check."""
    policy = serving_policy_get(project=project)
    index_version = active_index_version(project=project)
    model = retriever_path(index_version=index_version)
    verified_answers_reembed(project=project, embedding_model=model)
    verified = list(
        VerifiedAnswer.objects.filter(project=project, status=VerifiedAnswer.Status.ACTIVE)
    )
    calibration: dict = {
        "questions": len(verified),
        "false_match_rate": policy.calibration_false_match_rate,
        "embedding_model": model,
        "measured_at": timezone.now().isoformat(),
    }
    if len(verified) < MIN_QUESTIONS_TO_CALIBRATE:
        calibration["note"] = (
            f"fewer than {MIN_QUESTIONS_TO_CALIBRATE} verified answers: "
            f"the default threshold {DEFAULT_MATCH_THRESHOLD} applies"
        )
        policy.calibrated_threshold = None
        policy.calibration = calibration
        policy.save(update_fields=["calibrated_threshold", "calibration", "updated_at"])
        return policy
    vectors = np.array([np.asarray(v.question_embedding, dtype=np.float32) for v in verified])
    similarities = vectors @ vectors.T
    depth = policy.verified_match_evidence_depth
    closest_wrong = []
    for position, question in enumerate(verified):
        chunks = []
        if depth and index_version is not None:
            chunks = retrieve(
                project=project,
                query=question.question,
                options=RetrievalOptions(top_k=depth),
                index_version=index_version,
                embedding_model=model,
            ).chunks
        best = 0.0
        for other_position, other in enumerate(verified):
            if other_position == position:
                continue
            if _normalised(other.answer) == _normalised(question.answer):
                continue  # the same answer: a match would be right
            if depth and other.evidence and _evidence_rank(other, chunks, depth=depth) is None:
                continue
            best = max(best, float(similarities[position, other_position]))
        closest_wrong.append(best)
    quantile = float(np.quantile(closest_wrong, 1.0 - policy.calibration_false_match_rate))
    threshold = min(max(quantile + 1e-3, THRESHOLD_FLOOR), THRESHOLD_CEILING)
    calibration.update(
        threshold=round(threshold, 4),
        closest_other_similarity={
            "p50": round(float(np.quantile(closest_wrong, 0.5)), 4),
            "p90": round(float(np.quantile(closest_wrong, 0.9)), 4),
            "max": round(max(closest_wrong), 4),
        },
    )
    policy.calibrated_threshold = threshold
    policy.calibration = calibration
    policy.save(update_fields=["calibrated_threshold", "calibration", "updated_at"])
    return policy


# ---------------------------------------------------------------------------------------------
# Changing the serving policy

# What an admin may set; the calibrated threshold and its figures are written by calibration.
SERVING_POLICY_EDITABLE_FIELDS = (
    "verified_answers",
    "verified_match_threshold",
    "verified_match_evidence_depth",
    "calibration_false_match_rate",
    "answer_mode",
    "groundedness_threshold",
)
MAX_EVIDENCE_DEPTH = 20
# A calibration that tolerated more false matches than this would serve wrong answers often
# enough to do more harm than good; and no sample of questions can show a rate of 0.
MAX_FALSE_MATCH_RATE = 0.5


class ServingPolicyInvalid(ValueError):
    """Values a serving policy cannot take; `errors` says what is wrong, by field."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{name}: {error}" for name, error in errors.items()))
        self.errors = errors


def _number_within(value: object, low: float, high: float, *, above_low: bool = False) -> bool:
    """`value` is a number (not a bool) in [low, high], or (low, high] when `above_low`;
    written so that NaN is in no range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (low < value if above_low else low <= value) and value <= high


def serving_policy_errors(**fields: object) -> dict[str, str]:
    """What is wrong with these serving policy values, by field; empty when nothing is."""
    errors: dict[str, str] = {}
    choices = {
        "verified_answers": ServingPolicy.VerifiedAnswersMode.values,
        "answer_mode": ServingPolicy.AnswerMode.values,
    }
    for name, value in fields.items():
        if name not in SERVING_POLICY_EDITABLE_FIELDS:
            errors[name] = "not a setting of the serving policy"
        elif name in choices:
            if value not in choices[name]:
                errors[name] = f"must be one of {', '.join(choices[name])}"
        elif name == "verified_match_threshold" and value is None:
            continue  # the calibrated (or default) threshold applies
        elif name in ("verified_match_threshold", "groundedness_threshold"):
            if not _number_within(value, 0, 1):
                errors[name] = "must be between 0 and 1"
        elif name == "verified_match_evidence_depth":
            if isinstance(value, float) or not _number_within(value, 0, MAX_EVIDENCE_DEPTH):
                errors[name] = f"must be a whole number from 0 to {MAX_EVIDENCE_DEPTH}"
        elif name == "calibration_false_match_rate" and not _number_within(
            value, 0, MAX_FALSE_MATCH_RATE, above_low=True
        ):
            errors[name] = f"must be above 0 and at most {MAX_FALSE_MATCH_RATE}"
    return errors


def serving_policy_update(*, project: Project, **fields: object) -> ServingPolicy:
    """Change the editable settings of the project's serving policy (all of them checked
    before any is stored); raises ServingPolicyInvalid. The calibrated threshold stays as it
    was measured: calibrate again after changing the false-match rate or the evidence depth."""
    errors = serving_policy_errors(**fields)
    if errors:
        raise ServingPolicyInvalid(errors)
    policy = serving_policy_get(project=project)
    if not fields:
        return policy
    for name, value in fields.items():
        setattr(policy, name, value)
    # Only these columns: a calibration saved meanwhile keeps its own.
    policy.save(update_fields=[*fields, "updated_at"])
    return policy
