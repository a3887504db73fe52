"""Promotion and rollback: which model version serves and which index version retrieval
reads. Each switches one pointer atomically; earlier versions are kept for rollback."""

from django.db import transaction
from django.utils import timezone

from flywheel.models import IndexVersion, ModelVersion, Project

Status = ModelVersion.Status


def model_version_promote(*, version: ModelVersion) -> ModelVersion:
    """Make `version` production; the current production version is retired (kept)."""
    with transaction.atomic():
        current = (
            ModelVersion.objects.select_for_update()
            .filter(project=version.project, status=Status.PRODUCTION)
            .exclude(pk=version.pk)
        )
        current.update(status=Status.RETIRED)
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        version.status = Status.PRODUCTION
        version.promoted_at = timezone.now()
        version.save(update_fields=["status", "promoted_at", "updated_at"])
    return version


def model_version_previous(*, project: Project) -> ModelVersion | None:
    """The version that was in production before the current one."""
    return (
        ModelVersion.objects.filter(project=project, status=Status.RETIRED)
        .exclude(promoted_at=None)
        .order_by("-promoted_at")
        .first()
    )


def model_version_rollback(*, project: Project) -> ModelVersion | None:
    """Put the previous production version back; the current one is retired."""
    previous = model_version_previous(project=project)
    return model_version_promote(version=previous) if previous else None


def model_version_reject(*, version: ModelVersion) -> ModelVersion:
    if version.status == Status.CANDIDATE:
        version.status = Status.REJECTED
        version.save(update_fields=["status", "updated_at"])
    return version


def index_version_activate(*, version: IndexVersion) -> IndexVersion:
    """Make `version` the one retrieval reads, in one transaction; the active one is retired
    and stays for rollback. Retrieval picks it up on the next request."""
    with transaction.atomic():
        versions = IndexVersion.objects.select_for_update().filter(project=version.project)
        versions.filter(status=IndexVersion.Status.ACTIVE).exclude(pk=version.pk).update(
            status=IndexVersion.Status.RETIRED
        )
        version = versions.get(pk=version.pk)
        version.status = IndexVersion.Status.ACTIVE
        version.activated_at = timezone.now()
        version.save(update_fields=["status", "activated_at", "updated_at"])
    return version


def index_version_previous(*, project: Project) -> IndexVersion | None:
    return (
        IndexVersion.objects.filter(project=project, status=IndexVersion.Status.RETIRED)
        .exclude(activated_at=None)
        .order_by("-activated_at")
        .first()
    )


def index_version_rollback(*, project: Project) -> IndexVersion | None:
    previous = index_version_previous(project=project)
    return index_version_activate(version=previous) if previous else None
