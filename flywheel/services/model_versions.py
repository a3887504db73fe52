from django.db import IntegrityError, transaction

from flywheel.models import ModelVersion, Project

BASE_MODEL_VERSION_NAME = "base"


def model_version_production_ensure(*, project: Project) -> ModelVersion:
    """The project's production model version; the plain base model when none was promoted
    yet, so that every served answer names the model version that gave it."""
    production = ModelVersion.objects.filter(
        project=project, status=ModelVersion.Status.PRODUCTION
    ).first()
    if production:
        return production
    try:
        with transaction.atomic():
            return ModelVersion.objects.create(
                project=project,
                name=BASE_MODEL_VERSION_NAME,
                base_model="",
                status=ModelVersion.Status.PRODUCTION,
            )
    except IntegrityError:  # another request created it first
        return ModelVersion.objects.get(project=project, status=ModelVersion.Status.PRODUCTION)
