"""Rate: end users' ratings (thumbs, score, comment, correction, tags), each kept with its
history; a rater's new rating of an interaction replaces their current one."""

from django.db import transaction

from feedback.models import Rating, RatingSubmission
from feedback.signals import feedback_announce_after_commit
from flywheel.models import Interaction, Project


class InteractionNotFound(Exception):
    def __init__(self, interaction_id):
        super().__init__(f"No interaction {interaction_id} in this project.")
        self.interaction_id = interaction_id


RATING_FIELDS = ("thumb", "score", "comment", "correction", "tags")


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
        feedback_announce_after_commit(interaction_id=interaction.pk, kind="rating")
    return rating


def ratings_submit_batch(*, project: Project, ratings: list[dict], source: str) -> list[Rating]:
    """All ratings or none; every interaction must belong to `project`."""
    wanted = {item["interaction_id"] for item in ratings}
    interactions = {i.pk: i for i in Interaction.objects.filter(project=project, pk__in=wanted)}
    missing = [i for i in wanted if i not in interactions]
    if missing:
        raise InteractionNotFound(missing[0])
    with transaction.atomic():
        return [
            rating_submit(
                interaction=interactions[item["interaction_id"]],
                rater_id=item["rater_id"],
                source=source,
                **{field: item.get(field) for field in RATING_FIELDS},
            )
            for item in ratings
        ]


# --- Annotation queue: a verdict counts only from the reviewer who holds the item ------------
