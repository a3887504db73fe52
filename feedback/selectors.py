"""Reads of the feedback app."""

import uuid

from feedback.models import Interaction
from flywheel.models import Project


def interaction_get(*, project: Project, interaction_id: uuid.UUID) -> Interaction | None:
    return Interaction.objects.filter(project=project, pk=interaction_id).first()
