"""Reads behind the dashboard: the overview's figures, the interactions list, one interaction
in full, exports and API keys.

Every function takes the project and reads nothing outside it; views reach these only through
`dashboard.views.access.project_view`, which checks the user's role in that project.
"""

import base64
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.contrib.postgres.search import SearchQuery
from django.db.models import (
    Avg,
    Count,
    Exists,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce, Left
from django.utils import timezone

from feedback.models import Rating, RatingSubmission, Review, ReviewRevision, Thumb
from flywheel.models import IndexVersion, Interaction, ModelVersion, Project

INTERACTIONS_PAGE_SIZE = 50
EXCERPT_CHARS = 200


def created_between(queryset: QuerySet, date_from: date | None, date_to: date | None):
    """Both days inclusive, in the current time zone; compared as timestamps so that the
    (project, created_at) index serves the range."""
    if date_from:
        queryset = queryset.filter(created_at__gte=day_start(date_from))
    if date_to:
        queryset = queryset.filter(created_at__lt=day_start(date_to + timedelta(days=1)))
    return queryset


# ---------------------------------------------------------------------------------------------
# Overview


# ---------------------------------------------------------------------------------------------
# Interactions list and exports


class RatingFilter:
    ANY = ""
    UP = "up"
    DOWN = "down"
    UNRATED = "unrated"


@dataclass(frozen=True)
class InteractionFilters:
    """What the interactions list, and its exports, narrow down to. `rating` up/down keeps
    interactions with at least one current rating of that thumb."""

    rating: str = RatingFilter.ANY
    has_correction: bool = False
    model_version: ModelVersion | None = None
    index_version: IndexVersion | None = None
    date_from: date | None = None
    date_to: date | None = None
    search: str = ""


def interactions_filtered(*, project: Project, filters: InteractionFilters) -> QuerySet:
    ratings = Rating.objects.filter(interaction=OuterRef("pk"))
    interactions = created_between(
        Interaction.objects.filter(project=project), filters.date_from, filters.date_to
    ).annotate(latest_review_decision=latest_review_decision())
    if filters.rating == RatingFilter.UP:
        interactions = interactions.filter(Exists(ratings.filter(thumb=Thumb.UP)))
    elif filters.rating == RatingFilter.DOWN:
        interactions = interactions.filter(Exists(ratings.filter(thumb=Thumb.DOWN)))
    elif filters.rating == RatingFilter.UNRATED:
        interactions = interactions.filter(~Exists(ratings))
    if filters.has_correction:
        interactions = interactions.filter(
            Q(Exists(ratings.filter(correction__gt="")))
            | Q(latest_review_decision=Review.Decision.CORRECTED)
        )
    if filters.model_version:
        interactions = interactions.filter(model_version=filters.model_version)
    if filters.index_version:
        interactions = interactions.filter(index_version=filters.index_version)
    if filters.search:
        interactions = interactions.filter(
            search_vector=SearchQuery(filters.search, search_type="websearch", config="english")
        )
    return interactions


def _ratings_of_row(**conditions) -> QuerySet:
    return (
        Rating.objects.filter(interaction=OuterRef("pk"), **conditions)
        .order_by()
        .values("interaction")
    )


def _rating_count(**conditions):
    counted = _ratings_of_row(**conditions).annotate(count=Count("pk")).values("count")
    return Coalesce(Subquery(counted), 0)


def _with_rating_summary(interactions: QuerySet) -> QuerySet:
    """Each row's current ratings in brief. Correlated subqueries rather than a join and
    GROUP BY, so that a page is read through the time index and stops at its LIMIT instead of
    aggregating every interaction of the project first."""
    return interactions.annotate(
        thumbs_up=_rating_count(thumb=Thumb.UP),
        thumbs_down=_rating_count(thumb=Thumb.DOWN),
        mean_score=Subquery(_ratings_of_row().annotate(mean=Avg("score")).values("mean")),
        rating_corrections=_rating_count(correction__gt=""),
    )


NEWEST_FIRST = ("-created_at", "-id")


@dataclass(frozen=True)
class InteractionCursor:
    """Where a page of the list ended: the next page starts after this (created_at, id), so
    pages neither skip nor repeat rows that share a timestamp, and no OFFSET is scanned."""

    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> "InteractionCursor":
        """Raises ValueError for anything that is not a cursor made by `encode`."""
        padded = token + "=" * (-len(token) % 4)
        created_at, _, interaction_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        cursor = cls(created_at=datetime.fromisoformat(created_at), id=uuid.UUID(interaction_id))
        if cursor.created_at.tzinfo is None:
            raise ValueError("a cursor's time carries its offset")
        return cursor


@dataclass(frozen=True)
class InteractionPage:
    interactions: list[Interaction]
    next_cursor: InteractionCursor | None


def interactions_page(
    *,
    project: Project,
    filters: InteractionFilters,
    after: InteractionCursor | None = None,
    size: int = INTERACTIONS_PAGE_SIZE,
) -> InteractionPage:
    """One page of the filtered list, newest first, with excerpts instead of full texts."""
    interactions = interactions_filtered(project=project, filters=filters)
    if after:
        # The plain bound on created_at is implied by the OR; it is there for the planner,
        # which starts the index scan at the cursor with it instead of filtering every newer
        # row out.
        interactions = interactions.filter(created_at__lte=after.created_at).filter(
            Q(created_at__lt=after.created_at) | Q(created_at=after.created_at, id__lt=after.id)
        )
    rows = list(
        _with_rating_summary(interactions)
        .select_related("model_version")
        .only("id", "created_at", "model_name", "model_version__name")
        .annotate(
            query_excerpt=Left("query_text", EXCERPT_CHARS),
            response_excerpt=Left("response", EXCERPT_CHARS),
        )
        .order_by(*NEWEST_FIRST)[: size + 1]
    )
    page = rows[:size]
    more = len(rows) > size
    return InteractionPage(
        interactions=page,
        next_cursor=InteractionCursor(page[-1].created_at, page[-1].id) if more else None,
    )


def interactions_for_export(*, project: Project, filters: InteractionFilters) -> QuerySet:
    """The filtered list in full, newest first, with current ratings and reviews; iterate it
    in chunks (prefetching applies per chunk)."""
    return (
        _with_rating_summary(interactions_filtered(project=project, filters=filters))
        .select_related("model_version", "index_version")
        .defer("query_embedding")
        .prefetch_related(
            Prefetch("ratings", queryset=Rating.objects.order_by("created_at", "pk")),
            Prefetch(
                "reviews",
                queryset=Review.objects.select_related("reviewer").order_by("created_at", "pk"),
            ),
        )
        .order_by(*NEWEST_FIRST)
    )


def model_version_choices(*, project: Project) -> QuerySet:
    return ModelVersion.objects.filter(project=project).order_by("-created_at")


def index_version_choices(*, project: Project) -> QuerySet:
    return IndexVersion.objects.filter(project=project).order_by("-number")


# ---------------------------------------------------------------------------------------------
# One interaction


def interaction_detail_get(*, project: Project, interaction_id: uuid.UUID) -> Interaction | None:
    """The interaction with its versions, every current rating with its submission history
    (oldest first) and every review (newest first: the first one counts) with its revisions
    (oldest first; see review_history)."""
    return (
        Interaction.objects.filter(project=project, pk=interaction_id)
        .select_related("model_version", "index_version")
        .defer("query_embedding")
        .prefetch_related(
            Prefetch(
                "ratings",
                queryset=Rating.objects.order_by("-updated_at", "-pk").prefetch_related(
                    Prefetch(
                        "submissions",
                        queryset=RatingSubmission.objects.order_by("created_at", "pk"),
                    )
                ),
            ),
            Prefetch(
                "reviews",
                queryset=Review.objects.select_related("reviewer")
                .order_by("-created_at", "-pk")
                .prefetch_related(
                    Prefetch("revisions", queryset=ReviewRevision.objects.order_by("number"))
                ),
            ),
        )
        .first()
    )


@dataclass(frozen=True)
class ReviewRevisionEntry:
    """One revision of a review and, in words, what it changed from the one before (empty
    for the first: the review as submitted); whether it set an ideal answer or a note the one
    before did not have (for the first: whether it has one), so that the page shows it."""

    revision: ReviewRevision
    changes: list[str]
    ideal_answer_changed: bool
    note_changed: bool


def _revision_changes(previous: ReviewRevision, revision: ReviewRevision) -> list[str]:
    changes = []
    if previous.decision != revision.decision:
        changes.append(
            f"decision {previous.get_decision_display()} → {revision.get_decision_display()}"
        )
    if previous.ideal_answer != revision.ideal_answer:
        changes.append("ideal answer " + ("rewritten" if revision.ideal_answer else "removed"))
    if previous.note != revision.note:
        changes.append("note " + ("changed" if revision.note else "removed"))
    return changes


def review_history(*, review: Review) -> list[ReviewRevisionEntry]:
    """The revisions of a review fetched by interaction_detail_get, oldest first."""
    entries: list[ReviewRevisionEntry] = []
    previous: ReviewRevision | None = None
    for revision in review.revisions.all():
        if previous is None:
            entry = ReviewRevisionEntry(
                revision, [], bool(revision.ideal_answer), bool(revision.note)
            )
        else:
            entry = ReviewRevisionEntry(
                revision=revision,
                changes=_revision_changes(previous, revision),
                ideal_answer_changed=previous.ideal_answer != revision.ideal_answer,
                note_changed=previous.note != revision.note,
            )
        entries.append(entry)
        previous = revision
    return entries


# ---------------------------------------------------------------------------------------------
# API keys


def day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def latest_review_decision() -> Subquery:
    # Reviews are append-only and the latest one is the verdict that counts.
    latest = Review.objects.filter(interaction=OuterRef("pk")).order_by("-created_at", "-pk")
    return Subquery(latest.values("decision")[:1])
