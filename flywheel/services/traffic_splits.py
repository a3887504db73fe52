"""Traffic splits: while a canary experiment runs, requests for the production model are
divided between two arms, control (the production model version and the active index) and
candidate (a candidate model version and/or index version, production standing in for the
part not under test).

A person keeps their arm: the arm is drawn from a stable hash of the first id a request names
— the end user (`user`), the rater id, the session — salted with the experiment, so each
experiment draws afresh. A request that names nobody is assigned by chance and its interaction
says so (`assignment_unit` "random"). Closing the split (the experiment stopped, finished or
rolled back) returns every request to production from the next one on.

The experiment itself (its verdict, its policy) belongs to the retrain layer above, which opens
and closes splits through these services; the serving core keeps only the experiment's id.
"""

import hashlib
import random
import uuid
from dataclasses import dataclass

import requests
from django.db import IntegrityError, transaction
from django.utils import timezone

from flywheel.models import (
    AssignmentUnit,
    ExperimentArm,
    IndexVersion,
    ModelVersion,
    Project,
    ServingFailure,
    TrafficSplit,
)
from flywheel.services.model_versions import model_version_production_ensure

HASH_SPACE = 2**64


class TrafficSplitConflict(Exception):
    """The project already has an open traffic split (one experiment at a time), or one with
    this experiment id exists."""


class TrafficSplitInvalid(ValueError):
    """The split asked for cannot be served: a share out of range, no candidate, or a
    candidate that is not the project's or not servable."""


@dataclass(frozen=True)
class ArmAssignment:
    arm: str  # ExperimentArm
    unit: str  # AssignmentUnit


@dataclass(frozen=True)
class ArmVersions:
    """What serves an arm: a model version, and an index version (None: the active one)."""

    model_version: ModelVersion
    index_version: IndexVersion | None


def _unit_interval(text: str) -> float:
    """A stable number in [0, 1) for `text`: the first 8 bytes of its SHA-256."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / HASH_SPACE


def _split_check(
    *,
    project: Project,
    candidate_model_version: ModelVersion | None,
    candidate_index_version: IndexVersion | None,
    candidate_share: float,
    shadow_share: float,
) -> None:
    if not 0 < candidate_share < 1:
        raise TrafficSplitInvalid(
            f"The candidate's share must lie strictly between 0 and 1, not {candidate_share}."
        )
    if not 0 <= shadow_share <= 1:
        raise TrafficSplitInvalid(f"The shadow share must lie between 0 and 1, not {shadow_share}.")
    if candidate_model_version is None and candidate_index_version is None:
        raise TrafficSplitInvalid("A split needs a candidate model version or index version.")
    if candidate_model_version is not None:
        if candidate_model_version.project_id != project.pk:
            raise TrafficSplitInvalid(
                f"The model version '{candidate_model_version.name}' belongs to another project."
            )
        if candidate_model_version.status == ModelVersion.Status.PRODUCTION:
            raise TrafficSplitInvalid(
                f"The model version '{candidate_model_version.name}' is production already: "
                "it serves the control arm."
            )
    if candidate_index_version is not None:
        if candidate_index_version.project_id != project.pk:
            raise TrafficSplitInvalid(
                f"Index version {candidate_index_version.number} belongs to another project."
            )
        if candidate_index_version.status != IndexVersion.Status.READY:
            raise TrafficSplitInvalid(
                f"Index version {candidate_index_version.number} is "
                f"{candidate_index_version.status}: only a ready version can be a candidate."
            )


def traffic_split_open(
    *,
    project: Project,
    experiment_id: int,
    candidate_model_version: ModelVersion | None,
    candidate_index_version: IndexVersion | None,
    candidate_share: float,
    shadow_share: float = 0.0,
) -> TrafficSplit:
    """Start dividing the project's production traffic between control and the candidate,
    from the next request on. Raises TrafficSplitConflict when a split is open already (or
    this experiment had one), TrafficSplitInvalid when the split cannot be served."""
    _split_check(
        project=project,
        candidate_model_version=candidate_model_version,
        candidate_index_version=candidate_index_version,
        candidate_share=candidate_share,
        shadow_share=shadow_share,
    )
    try:
        with transaction.atomic():
            return TrafficSplit.objects.create(
                project=project,
                experiment_id=experiment_id,
                candidate_model_version=candidate_model_version,
                candidate_index_version=candidate_index_version,
                candidate_share=candidate_share,
                shadow_share=shadow_share,
                opened_at=timezone.now(),
            )
    except IntegrityError as error:
        # The partial unique constraint decides between concurrent openings.
        open_split = traffic_split_open_for(project=project)
        if open_split is not None:
            raise TrafficSplitConflict(
                f"Experiment {open_split.experiment_id} is running in this project already; "
                "stop it first."
            ) from error
        raise TrafficSplitConflict(
            f"Experiment {experiment_id} had a traffic split already."
        ) from error


def traffic_split_close(*, project: Project, experiment_id: int) -> None:
    """Return all of the project's traffic to production from the next request on. Closing a
    closed (or never opened) split does nothing."""
    TrafficSplit.objects.filter(
        project=project, experiment_id=experiment_id, closed_at__isnull=True
    ).update(closed_at=timezone.now(), updated_at=timezone.now())


def traffic_split_open_for(*, project: Project) -> TrafficSplit | None:
    """The project's open split, read on every request for the production model."""
    return (
        TrafficSplit.objects.filter(project=project, closed_at__isnull=True)
        .select_related("project", "candidate_model_version", "candidate_index_version")
        .first()
    )


def arm_assign(
    *, split: TrafficSplit, user: str = "", rater_id: str = "", session_id: str = ""
) -> ArmAssignment:
    """The arm that serves a request: drawn from the first id it names (the same id always
    gets the same arm in one experiment), or by chance when it names none."""
    for unit, value in (
        (AssignmentUnit.USER, user),
        (AssignmentUnit.RATER, rater_id),
        (AssignmentUnit.SESSION, session_id),
    ):
        if value:
            draw = _unit_interval(f"{split.experiment_id}:{unit.value}:{value}")
            break
    else:
        unit, draw = AssignmentUnit.RANDOM, random.random()
    arm = ExperimentArm.CANDIDATE if draw < split.candidate_share else ExperimentArm.CONTROL
    return ArmAssignment(arm=arm.value, unit=unit.value)


def arm_versions(*, split: TrafficSplit, arm: str) -> ArmVersions:
    """The model and index versions that serve `arm`: control is production and the active
    index; the candidate arm is its candidates, production standing in for what it lacks."""
    production = model_version_production_ensure(project=split.project)
    if arm == ExperimentArm.CONTROL:
        return ArmVersions(model_version=production, index_version=None)
    return ArmVersions(
        model_version=split.candidate_model_version or production,
        index_version=split.candidate_index_version,
    )


def shadow_sampled(*, split: TrafficSplit, interaction_id: uuid.UUID) -> bool:
    """Whether the candidate also answers this control interaction in the background: a
    stable draw from the interaction's id, so that a retry decides the same way."""
    if split.shadow_share <= 0:
        return False
    return _unit_interval(f"{split.experiment_id}:shadow:{interaction_id}") < split.shadow_share


def serving_failure_record(*, split: TrafficSplit, arm: str, error: Exception) -> ServingFailure:
    """Count a request the arm failed to answer (no interaction records it), for the
    experiment's comparison of the arms' error rates."""
    timed_out = isinstance(error.__cause__, requests.Timeout)
    return ServingFailure.objects.create(
        project_id=split.project_id,
        experiment_id=split.experiment_id,
        experiment_arm=arm,
        kind=ServingFailure.Kind.TIMEOUT if timed_out else ServingFailure.Kind.GENERATION_ERROR,
        detail=str(error)[:2000],
    )
