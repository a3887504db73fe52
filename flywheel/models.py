import hashlib

from django.db import models


class BaseModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Project(BaseModel):
    """A tenant: owns its documents, interactions, datasets and model versions."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name


class Document(BaseModel):
    """One source document of a project's knowledge base, as it was last added."""

    class ContentType(models.TextChoices):
        TEXT = "text", "Plain text"
        MARKDOWN = "markdown", "Markdown"
        HTML = "html", "HTML"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=500)
    source_uri = models.CharField(max_length=2000)
    content_type = models.CharField(max_length=20, choices=ContentType.choices)
    content = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)
    # sha256 of the content type and content: re-adding an unchanged document is a no-op.
    content_hash = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "source_uri"], name="document_unique_source_per_project"
            ),
        ]

    def __str__(self) -> str:
        return self.title

    @staticmethod
    def hash_content(*, content_type: str, content: str) -> str:
        return hashlib.sha256(f"{content_type}\0{content}".encode()).hexdigest()
