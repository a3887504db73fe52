"""When the schedule starts jobs by itself: each check returns the reason, or None, and
`due_jobs_start` starts what is due."""

from django.db.models import Q

from feedback.models import Review
from flywheel.models import Document, IndexVersion, ModelVersion, Project
from retrain.curation.policy import curation_policy_get
from retrain.jobs.lifecycle import job_create
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
    # A revised review counts too: one that corrects now, or that corrected before and no
    # longer does (its FAQ entry must go).
    corrections = (
        Review.objects.filter(interaction__project=project, updated_at__gt=since)
        .filter(
            Q(decision=Review.Decision.CORRECTED) | Q(revisions__decision=Review.Decision.CORRECTED)
        )
        .distinct()
        .count()
    )
    if corrections:
        return f"{corrections} approved correction(s) added or revised since index v{active.number}"
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


def due_jobs_start(*, project: Project) -> list[Job]:
    """Start the jobs the schedule owes the project: an index refresh when documents or
    approved corrections changed, a training run when the policy's number of new training
    examples is reached. Each check skips a kind already queued or running, so a repeat
    starts nothing twice. The job's progress message says why it was due."""
    started = []
    for kind, due in (
        (Job.Kind.INDEX_REFRESH, index_refresh_due),
        (Job.Kind.LORA_TRAINING, retraining_due),
    ):
        reason = due(project=project)
        if reason:
            job = job_create(project=project, kind=kind, trigger=Job.Trigger.SCHEDULE)
            job.progress_message = reason[:300]
            job.save(update_fields=["progress_message"])
            started.append(job)
    return started
