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
