"""Rate: end users' ratings (thumbs, score, comment, correction, tags), each kept with its
history; a rater's new rating of an interaction replaces their current one."""

from django.db import transaction

from feedback.models import Rating, RatingSubmission
from feedback.signals import feedback_announce
from flywheel.models import Interaction, Project
from flywheel.services.idempotency import idempotent_request_run, request_fingerprint


class InteractionNotFound(Exception):
    def __init__(self, interaction_id):
        super().__init__(f"No interaction {interaction_id} in this project.")
        self.interaction_id = interaction_id


RATING_FIELDS = ("thumb", "score", "comment", "correction", "tags")
RATINGS_IDEMPOTENCY_SCOPE = "ratings"


def rating_submit(
    *,
    interaction: Interaction,
    rater_id: str,
    source: str,
    thumb: str | None = "",
    score: int | None = None,
    comment: str | None = "",
    correction: str | None = "",
    tags: list[str] | None = None,
) -> Rating:
    """Record a rating; it replaces the rater's earlier one, which stays in the history."""
    values = {
        "thumb": thumb or "",
        "score": score,
        "comment": comment or "",
        "correction": correction or "",
        "tags": tags or [],
        "source": source,
    }
    with transaction.atomic():
        rating, _ = Rating.objects.select_for_update().update_or_create(
            interaction=interaction, rater_id=rater_id, defaults=values
        )
        RatingSubmission.objects.create(rating=rating, **values)
        feedback_announce(interaction_id=interaction.pk, kind="rating")
    return rating


def ratings_submit_batch(
    *,
    project: Project,
    ratings: list[dict],
    source: str,
    idempotency_key: str | None = None,
) -> list[Rating]:
    """All ratings or none; every interaction must belong to `project`.

    Under an `idempotency_key`, a retry of the same ratings returns the ratings the first
    request stored and stores nothing new; other ratings under the key raise
    IdempotencyConflict.
    """
    wanted = {item["interaction_id"] for item in ratings}
    interactions = {i.pk: i for i in Interaction.objects.filter(project=project, pk__in=wanted)}
    missing = [i for i in wanted if i not in interactions]
    if missing:
        raise InteractionNotFound(missing[0])

    def store() -> list[Rating]:
        return [
            rating_submit(
                interaction=interactions[item["interaction_id"]],
                rater_id=item["rater_id"],
                source=source,
                **{field: item.get(field) for field in RATING_FIELDS},
            )
            for item in ratings
        ]

    if idempotency_key is None:
        with transaction.atomic():
            return store()
    stored: list[Rating] = []

    def store_ids() -> list[int]:
        stored.extend(store())
        return [rating.pk for rating in stored]

    rating_ids, first_time = idempotent_request_run(
        project=project,
        scope=RATINGS_IDEMPOTENCY_SCOPE,
        key=idempotency_key,
        request_hash=request_fingerprint({"ratings": ratings, "source": source}),
        store=store_ids,
    )
    if first_time:
        return stored
    by_id = Rating.objects.in_bulk(rating_ids)
    return [by_id[rating_id] for rating_id in rating_ids if rating_id in by_id]


# --- Annotation queue: a verdict counts only from the reviewer who holds the item ------------
