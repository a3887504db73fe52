import uuid

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models import Q
from pgvector.django import VectorField

from flywheel.models import EMBEDDING_DIMENSIONS, IndexVersion, ModelVersion, Project


class Interaction(models.Model):
    """One question and its answer, logged in full: what was asked, what was retrieved (with
    scores, ranks and the index version), what answered, how long it took and how many tokens."""

    class Source(models.TextChoices):
        CHAT = "chat", "Served by Flywheel"
        LOG = "log", "Logged by the app"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="interactions")
    source = models.CharField(max_length=10, choices=Source.choices)
    # The client's id for this interaction: sending it again is a no-op. NULL, not "", when
    # absent, so that the uniqueness constraint ignores interactions without one.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    session_id = models.CharField(max_length=200, blank=True)
    end_user_id = models.CharField(max_length=200, blank=True)
    messages = models.JSONField(default=list)
    query_text = models.TextField(blank=True)
    query_embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True)
    # [{chunk_id, document_id, title, source_uri, text, score, rank, index_version_id}, ...]
    retrieved = models.JSONField(default=list, blank=True)
    response = models.TextField(blank=True)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    model_name = models.CharField(max_length=300, blank=True)
    index_version = models.ForeignKey(
        IndexVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    # For the dashboard's full-text search over questions and answers.
    search_vector = models.GeneratedField(
        expression=SearchVector("query_text", "response", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        indexes = [
            GinIndex(fields=["search_vector"], name="interaction_search_gin"),
            models.Index(fields=["project", "created_at"], name="interaction_project_time"),
            models.Index(
                fields=["project", "model_version", "created_at"],
                name="interaction_model_time",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="interaction_unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.query_text[:60]}"


class ProjectMembership(models.Model):
    """A dashboard user's role in a project. Superusers act as admins of every project."""

    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer (read only)"
        REVIEWER = "reviewer", "Reviewer (works the annotation queue)"
        ADMIN = "admin", "Admin (keys, jobs, everything)"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "project"], name="membership_unique_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.project}"


class Thumb(models.TextChoices):
    UP = "up", "Thumbs up"
    DOWN = "down", "Thumbs down"


class RatingSource(models.TextChoices):
    WIDGET = "widget", "Widget"
    API = "api", "API"
    REVIEWER = "reviewer", "Reviewer"


class RatingFields(models.Model):
    thumb = models.CharField(max_length=4, choices=Thumb.choices, blank=True)
    score = models.PositiveSmallIntegerField(null=True, blank=True)
    comment = models.TextField(blank=True)
    correction = models.TextField(blank=True, help_text="The answer the rater would have liked")
    tags = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=10, choices=RatingSource.choices)

    class Meta:
        abstract = True


class Rating(RatingFields):
    """The current rating of one rater on one interaction. A new rating by the same rater
    replaces it; every submission is kept in RatingSubmission."""

    interaction = models.ForeignKey(Interaction, on_delete=models.CASCADE, related_name="ratings")
    rater_id = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["interaction", "rater_id"], name="rating_one_per_rater"
            ),
            models.CheckConstraint(
                condition=Q(score__isnull=True) | Q(score__gte=1, score__lte=5),
                name="rating_score_1_to_5",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rater_id} on {self.interaction_id}: {self.thumb or self.score}"


class RatingSubmission(RatingFields):
    """Every rating as it was submitted, oldest first: the history behind Rating."""

    rating = models.ForeignKey(Rating, on_delete=models.CASCADE, related_name="submissions")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"submission {self.pk} of rating {self.rating_id}"


class Review(models.Model):
    """A reviewer's verdict on an interaction. Append-only: the latest one counts."""

    class Decision(models.TextChoices):
        APPROVED = "approved", "Approved: the answer is good"
        REJECTED = "rejected", "Rejected: keep it out of training data"
        CORRECTED = "corrected", "Corrected: the ideal answer is written"

    interaction = models.ForeignKey(Interaction, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews"
    )
    decision = models.CharField(max_length=20, choices=Decision.choices)
    ideal_answer = models.TextField(blank=True)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~Q(decision="corrected") | ~Q(ideal_answer=""),
                name="review_correction_has_answer",
            ),
        ]
        indexes = [models.Index(fields=["interaction", "-created_at"], name="review_latest")]

    def __str__(self) -> str:
        return f"{self.decision} by {self.reviewer_id} on {self.interaction_id}"


class ReviewLease(models.Model):
    """An interaction handed to a reviewer by the queue; nobody else gets it until the lease
    expires, so two reviewers never work the same item at once."""

    interaction = models.OneToOneField(
        Interaction, on_delete=models.CASCADE, related_name="lease", primary_key=True
    )
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.interaction_id} leased to {self.reviewer_id} until {self.expires_at}"
