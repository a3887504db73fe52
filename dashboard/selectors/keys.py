"""The API keys page."""

from django.db.models import (
    F,
    QuerySet,
)

from flywheel.models import ApiKey, Project


def api_keys_for_project(*, project: Project) -> QuerySet:
    """Active keys first (newest first), then the revoked ones, latest revoked first."""
    return ApiKey.objects.filter(project=project).order_by(
        F("revoked_at").desc(nulls_first=True), "-created_at"
    )


def api_key_get(*, project: Project, api_key_id: int) -> ApiKey | None:
    return ApiKey.objects.filter(project=project, pk=api_key_id).first()
