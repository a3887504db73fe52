"""Model versions: the production pointer, switched atomically; serving reads it per request,
so a promotion or rollback takes effect on the next request without a restart."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from flywheel.models import ModelVersion, Project

BASE_MODEL_VERSION_NAME = "base"
Status = ModelVersion.Status


def model_version_production_ensure(*, project: Project) -> ModelVersion:
    """The project's production model version; the plain base model when none was promoted
    yet, so that every served answer names the model version that gave it."""
    production = ModelVersion.objects.filter(project=project, status=Status.PRODUCTION).first()
    if production:
        return production
    try:
        with transaction.atomic():
            return ModelVersion.objects.create(
                project=project,
                name=BASE_MODEL_VERSION_NAME,
                base_model="",
                status=Status.PRODUCTION,
                promoted_at=timezone.now(),
            )
    except IntegrityError:  # another request created it first
        return ModelVersion.objects.get(project=project, status=Status.PRODUCTION)


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
