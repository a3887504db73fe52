import uuid

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

    class Meta:
        indexes = [
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
