"""Reads of the interaction log."""

import uuid

from flywheel.models import Interaction, Project


def interaction_get(*, project: Project, interaction_id: uuid.UUID) -> Interaction | None:
    return Interaction.objects.filter(project=project, pk=interaction_id).first()
