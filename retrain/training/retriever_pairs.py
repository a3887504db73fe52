"""(question, passage) pairs for the retriever, from the feedback on served answers.

An interaction teaches the retriever when its answer is known to be right: its latest review
wrote the ideal answer or approved the answer (the end user's correction, when the reviewer
approved one, else the model's), or, unreviewed, its raters liked it (a thumbs-up or a score of
4 or 5, and nobody gave a thumbs-down, a low score or a correction). The passage that answers
the question is the document passage holding most of the right answer's content words, among
those served with the interaction and those the active index finds for the answer itself; the
served passages that hold almost none of it are the hard negatives, the passages the
retriever ranked high for the question and should not have.

Passages are given as the index embeds them (document title and heading above the text), so
what the model learns to match is what retrieval compares with the question.
"""

import re
from dataclasses import dataclass

from django.db.models import Exists, OuterRef, Prefetch

from feedback.models import LOW_SCORE_MAX, Rating, Review, Thumb
from feedback.services.reviews import approved_answer
from flywheel.grounding import groundedness
from flywheel.models import Chunk, Interaction, Project
from flywheel.selectors.retrieval import RetrievalOptions, active_index_version, retrieve
from flywheel.services.indexing import passage_for_embedding
from retrain.curation.examples import ExampleScrubber
from retrain.curation.policy import curation_policy_get
from retrain.training.retriever import RetrieverPair

# A passage answers the question when it holds this share of the right answer's content words
# (the evidence threshold verified answers use), and is a hard negative below the other.
POSITIVE_MIN_GROUNDEDNESS = 0.5
NEGATIVE_MAX_GROUNDEDNESS = 0.2
MAX_HARD_NEGATIVES = 3
# Passages the active index is asked for, for the right answer's text.
ANSWER_SEARCH_TOP_K = 5
HIGH_SCORE_MIN = 4

_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class _Passage:
    embedded: str  # what the index embeds: title and heading above the text
    text: str  # the passage text alone, what groundedness is measured on


def _right_answer(interaction: Interaction) -> str:
    """The answer the feedback vouches for; "" when it vouches for none."""
    reviews = list(interaction.reviews.all())  # newest first (prefetched)
    if reviews:
        review = reviews[0]
        if review.decision == Review.Decision.REJECTED:
            return ""
        # The ideal answer, or the end user's correction the reviewer approved.
        answer = approved_answer(review=review)
        if answer:
            return answer
        return interaction.response if review.decision == Review.Decision.APPROVED else ""
    ratings = list(interaction.ratings.all())
    liked = any(r.thumb == Thumb.UP or (r.score or 0) >= HIGH_SCORE_MIN for r in ratings)
    disliked = any(
        r.thumb == Thumb.DOWN
        or (r.score is not None and r.score <= LOW_SCORE_MAX)
        # A correction says the answer was not right, and nobody checked the correction.
        or r.correction.strip()
        for r in ratings
    )
    return interaction.response if liked and not disliked else ""


def _is_document_passage(entry: dict) -> bool:
    kind = entry.get("kind")
    if kind is None:  # logged before passages carried their kind
        return entry.get("document_id") is not None
    return kind == Chunk.Kind.DOCUMENT


def _passage(entry: dict) -> _Passage | None:
    text = entry.get("text")
    if not isinstance(text, str) or not text.strip():
        return None
    embedded = passage_for_embedding(
        title=str(entry.get("title") or ""), heading=str(entry.get("heading") or ""), text=text
    )
    return _Passage(embedded=embedded, text=text)


def _served_passages(interaction: Interaction) -> list[_Passage]:
    """The document passages served with the interaction, in their rank order, once each."""
    entries = [e for e in interaction.retrieved or [] if isinstance(e, dict)]
    entries.sort(key=lambda entry: entry.get("rank") or 0)
    passages = [_passage(entry) for entry in entries if _is_document_passage(entry)]
    return list({p.embedded: p for p in passages if p is not None}.values())


def _found_passages(*, project: Project, answer: str, index_version) -> list[_Passage]:
    if index_version is None:
        return []
    found = retrieve(
        project=project,
        query=answer,
        options=RetrievalOptions(top_k=ANSWER_SEARCH_TOP_K),
        index_version=index_version,
    )
    passages = [
        _passage(chunk.as_log_entry(index_version_id=index_version.pk))
        for chunk in found.chunks
        if chunk.kind == Chunk.Kind.DOCUMENT
    ]
    return [p for p in passages if p is not None]


def _pair_for(
    *, project: Project, interaction: Interaction, question: str, answer: str, index_version
) -> RetrieverPair | None:
    served = _served_passages(interaction)
    candidates = served + _found_passages(
        project=project, answer=answer, index_version=index_version
    )
    best: tuple[float, _Passage] | None = None
    for passage in candidates:  # served first: they win a tie
        score = groundedness(answer=answer, passages=[passage.text])
        if score >= POSITIVE_MIN_GROUNDEDNESS and (best is None or score > best[0]):
            best = (score, passage)
    if best is None:
        return None
    positive = best[1]
    negatives = [
        passage.embedded
        for passage in served
        if passage.embedded != positive.embedded
        and groundedness(answer=answer, passages=[passage.text]) < NEGATIVE_MAX_GROUNDEDNESS
    ][:MAX_HARD_NEGATIVES]
    return RetrieverPair(question=question, positive=positive.embedded, negatives=tuple(negatives))


def retriever_pairs_from_feedback(*, project: Project) -> list[RetrieverPair]:
    """One pair per interaction whose right answer is known and found in a document passage,
    oldest interaction first; questions PII-scrubbed when the curation policy says so."""
    policy = curation_policy_get(project=project)
    scrubber = ExampleScrubber(policy)
    index_version = active_index_version(project=project)
    interactions = (
        Interaction.objects.filter(project=project)
        .filter(
            Exists(Review.objects.filter(interaction=OuterRef("pk")))
            | Exists(Rating.objects.filter(interaction=OuterRef("pk")))
        )
        .defer("search_vector", "query_embedding")
        .order_by("created_at", "pk")
        .prefetch_related(
            "ratings",
            Prefetch("reviews", queryset=Review.objects.order_by("-created_at", "-pk")),
        )
    )
    pairs = []
    for interaction in interactions:
        question = _SPACES.sub(" ", interaction.query_text or "").strip()
        answer = _right_answer(interaction).strip()
        if not question or not answer:
            continue
        question = scrubber.scrub(question, source="user_messages")
        pair = _pair_for(
            project=project,
            interaction=interaction,
            question=question,
            answer=answer,
            index_version=index_version,
        )
        if pair is not None:
            pairs.append(pair)
    return pairs
