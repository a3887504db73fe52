"""When the schedule starts jobs by itself: each check returns the reason, or None."""

from feedback.models import Review
from flywheel.models import Document, IndexVersion, ModelVersion, Project
from retrain.curation.policy import curation_policy_get
from retrain.models import DatasetRecord, InstructionExample, Job

UNFINISHED = (Job.State.QUEUED, Job.State.RUNNING)


def _already_running(project: Project, kind: str) -> bool:
    return Job.objects.filter(project=project, kind=kind, state__in=UNFINISHED).exists()


def index_refresh_due(*, project: Project) -> str | None:
    if _already_running(project, Job.Kind.INDEX_REFRESH):
        return None
    active = IndexVersion.objects.filter(project=project, status=IndexVersion.Status.ACTIVE).first()
    if active is None:
        return "no active index yet" if Document.objects.filter(project=project).exists() else None
    since = active.activated_at or active.created_at
    corrections = Review.objects.filter(
        interaction__project=project, decision=Review.Decision.CORRECTED, created_at__gt=since
    ).count()
    if corrections:
        return f"{corrections} approved correction(s) since index v{active.number}"
    changed = Document.objects.filter(project=project, updated_at__gt=since).count()
    if changed and active.built_by_job_id:
        return f"{changed} document(s) changed since index v{active.number} was built"
    return None


def retraining_due(*, project: Project) -> str | None:
    if _already_running(project, Job.Kind.LORA_TRAINING):
        return None
    policy = curation_policy_get(project=project)
    available = InstructionExample.objects.filter(
        project=project,
        status=InstructionExample.Status.INCLUDED,
        split=InstructionExample.Split.TRAIN,
    ).count()
    production = ModelVersion.objects.filter(
        project=project, status=ModelVersion.Status.PRODUCTION
    ).first()
    trained_on = (
        DatasetRecord.objects.filter(
            dataset_version_id=production.dataset_version_id,
            kind=DatasetRecord.Kind.SFT,
            split="train",
        ).count()
        if production and production.dataset_version_id
        else 0
    )
    new = available - trained_on
    if new >= policy.min_new_examples_to_retrain:
        return f"{new} new training examples (policy: {policy.min_new_examples_to_retrain})"
    return None
