"""Promotion and rollback: which model version serves, which index version retrieval reads
and which retriever (embedding model) builds the index. Each switches one pointer atomically;
earlier versions are kept for rollback."""

from dataclasses import dataclass
from typing import TypeVar

from django.db import transaction
from django.utils import timezone

from flywheel.models import EmbeddingModelVersion, IndexVersion, ModelVersion, Project
from flywheel.selectors.retrieval import active_index_version
from flywheel.services.indexing import embedding_model_name
from flywheel.services.verified_answers import verified_answers_reembed
from retrain.experiments.services import experiment_stop_running
from retrain.jobs.lifecycle import job_create
from retrain.models import Job
from retrain.transitions import NothingToRollBack, TransitionRefused

# Model versions and retrievers share their status values (candidate, production, retired,
# rejected), so one pointer switch serves both.
Status = ModelVersion.Status
RetrieverStatus = EmbeddingModelVersion.Status


Versioned = TypeVar("Versioned", ModelVersion, EmbeddingModelVersion)
# The decision an evaluation's promotion gate records when the candidate earned production.
PROMOTE = "promote"


def _production_switch(version: Versioned) -> Versioned:
    """Make `version` its project's production version of its kind, retiring (and keeping) the
    current one; the caller holds a transaction."""
    kind = type(version)
    kind.objects.select_for_update().filter(
        project=version.project, status=Status.PRODUCTION
    ).exclude(pk=version.pk).update(status=Status.RETIRED)
    version = kind.objects.select_for_update().get(pk=version.pk)
    version.status = Status.PRODUCTION
    version.promoted_at = timezone.now()
    version.save(update_fields=["status", "promoted_at", "updated_at"])
    return version


def _previous_production(kind: type[Versioned], *, project: Project) -> Versioned | None:
    """The version of `kind` that was in production before the current one."""
    return (
        kind.objects.filter(project=project, status=Status.RETIRED)
        .exclude(promoted_at=None)
        .order_by("-promoted_at")
        .first()
    )


def _candidate_reject(version: Versioned) -> Versioned:
    if version.status == Status.CANDIDATE:
        version.status = Status.REJECTED
        version.save(update_fields=["status", "updated_at"])
    return version


def gate_decision(version: ModelVersion) -> str | None:
    """What the promotion gate of the version's last evaluation decided (`promote`, or why
    not); None when it was never evaluated."""
    evaluation = version.metrics.get("evaluation")
    gate = evaluation.get("gate") if isinstance(evaluation, dict) else None
    return gate.get("decision") if isinstance(gate, dict) else None


def experiment_decision(version: ModelVersion) -> str | None:
    """What the last canary experiment of the version decided from live ratings (`promote`
    when it won, else its verdict); None when it was never in one that reached a verdict."""
    experiment = version.metrics.get("experiment")
    return experiment.get("decision") if isinstance(experiment, dict) else None


def model_version_experiment_record(
    *, version: ModelVersion, experiment_id: int, verdict: str, reason: str, evidence: dict
) -> ModelVersion:
    """Keep an experiment's verdict on the candidate, as evaluation keeps its gate's: a win
    is evidence that promotion accepts (decision `promote`)."""
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    version.metrics = {
        **version.metrics,
        "experiment": {
            "experiment_id": experiment_id,
            "verdict": verdict,
            "decision": PROMOTE if verdict == "candidate_wins" else verdict,
            "reason": reason,
            "evidence": evidence,
            "at": timezone.now().isoformat(),
        },
    }
    version.save(update_fields=["metrics", "updated_at"])
    return version


def _actor(user, actor: str) -> str:
    return user.get_username() if user is not None else actor


def model_version_promote(
    *, version: ModelVersion, reason: str = "", user=None, actor: str = ""
) -> ModelVersion:
    """Make `version` production; the current production version is retired (kept).

    Promotion needs evidence: the version won a canary experiment on live ratings, or its
    evaluation gate decided `promote`, or whoever promotes it by hand writes down why. Who
    (`user`, or `actor` naming an API key or a command), when and why are recorded in the
    version's metrics under `promotion`. Raises TransitionRefused."""
    reason = reason.strip()
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.status == Status.PRODUCTION:
            raise TransitionRefused(
                f"{version.name} is already in production.", code="already_in_production"
            )
        decision = gate_decision(version)
        won_experiment = experiment_decision(version) == PROMOTE
        if decision != PROMOTE and not won_experiment and not reason:
            evaluated = (
                f"its evaluation decided {decision!r}" if decision else "it was never evaluated"
            )
            raise TransitionRefused(
                f"{version.name} has no evaluation that recommends it ({evaluated}); promoting "
                "it by hand needs a written reason.",
                code="promotion_reason_required",
            )
        if won_experiment:
            basis = "experiment"
            reason = reason or version.metrics["experiment"].get("reason", "")
        elif decision == PROMOTE:
            basis = "evaluation"
            reason = reason or version.metrics["evaluation"]["gate"].get("reason", "")
        else:
            basis = "hand"
        # Auto-promotion ends its experiment first; any other promotion ends the running one.
        experiment_stop_running(
            project=version.project,
            reason=f"{version.name} was put in production outside the experiment ({basis}).",
            by=_actor(user, actor),
        )
        return _model_version_switch(
            version, basis=basis, reason=reason, user=user, actor=_actor(user, actor)
        )


def _model_version_switch(
    version: ModelVersion, *, basis: str, reason: str, user, actor: str
) -> ModelVersion:
    """Switch production to `version` and record how it got there; in a transaction."""
    version = _production_switch(version)
    version.metrics = {
        **version.metrics,
        "promotion": {
            "basis": basis,
            "reason": reason,
            "by": actor,
            "user_id": user.pk if user is not None else None,
            "at": version.promoted_at.isoformat() if version.promoted_at else None,
        },
    }
    version.save(update_fields=["metrics", "updated_at"])
    return version


def model_version_previous(*, project: Project) -> ModelVersion | None:
    """The version that was in production before the current one."""
    return _previous_production(ModelVersion, project=project)


def model_version_rollback(*, project: Project, user=None, actor: str = "") -> ModelVersion:
    """Put the previous production version back; the current one is retired. It served
    before, so it needs no new evidence. A running experiment stops: everyone is served by
    production again from the next request on. Raises NothingToRollBack."""
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        previous = model_version_previous(project=project)
        if previous is None:
            raise NothingToRollBack("There is no earlier production version to roll back to.")
        by = _actor(user, actor)
        experiment_stop_running(
            project=project, reason=f"Production was rolled back to {previous.name}.", by=by
        )
        return _model_version_switch(previous, basis="rollback", reason="", user=user, actor=by)


def model_version_reject(*, version: ModelVersion) -> ModelVersion:
    """A candidate leaves the candidates (it is kept and can still be promoted). Raises
    TransitionRefused for any other version."""
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.status != Status.CANDIDATE:
            raise TransitionRefused(
                f"Only candidates can be rejected; {version.name} is "
                f"{version.get_status_display().lower()}.",
                code="not_a_candidate",
            )
        return _candidate_reject(version)


def _index_version_switch(version: IndexVersion) -> IndexVersion:
    """Make `version` the one retrieval reads, in one transaction; the active one is retired
    and stays for rollback. Verified questions embedded by another retriever than the
    version's are then embedded by its (they are matched in the active index's space)."""
    with transaction.atomic():
        experiment_stop_running(
            project=version.project,
            reason=f"Index v{version.number} became the active index.",
            by="index activation",
            only_if_comparing_indexes=True,
        )
        versions = IndexVersion.objects.select_for_update().filter(project=version.project)
        versions.filter(status=IndexVersion.Status.ACTIVE).exclude(pk=version.pk).update(
            status=IndexVersion.Status.RETIRED
        )
        version = versions.get(pk=version.pk)
        version.status = IndexVersion.Status.ACTIVE
        version.activated_at = timezone.now()
        version.save(update_fields=["status", "activated_at", "updated_at"])
    if version.embedding_model:
        verified_answers_reembed(project=version.project, embedding_model=version.embedding_model)
    return version


def index_version_activate(*, version: IndexVersion) -> IndexVersion:
    """Make a built index version the one retrieval reads; retrieval picks it up on the next
    request. Only a ready version (built: never active, or retired since) can be activated;
    raises TransitionRefused for one still building or already active."""
    with transaction.atomic():
        version = IndexVersion.objects.select_for_update().get(pk=version.pk)
        if version.status == IndexVersion.Status.BUILDING:
            raise TransitionRefused(
                f"Index v{version.number} is still being built; only a ready or retired one "
                "can be activated.",
                code="index_not_ready",
            )
        if version.status == IndexVersion.Status.ACTIVE:
            raise TransitionRefused(
                f"Index v{version.number} is already active.", code="already_active"
            )
        return _index_version_switch(version)


def index_version_previous(*, project: Project) -> IndexVersion | None:
    return (
        IndexVersion.objects.filter(project=project, status=IndexVersion.Status.RETIRED)
        .exclude(activated_at=None)
        .order_by("-activated_at")
        .first()
    )


def index_version_rollback(*, project: Project, user=None, actor: str = "") -> IndexVersion:
    """Retrieval goes back to the index version active before; a running experiment stops,
    as with a model rollback. Raises NothingToRollBack."""
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        previous = index_version_previous(project=project)
        if previous is None:
            raise NothingToRollBack("There is no earlier index version to roll back to.")
        experiment_stop_running(
            project=project,
            reason=f"The index was rolled back to v{previous.number}.",
            by=_actor(user, actor),
        )
        return _index_version_switch(previous)


@dataclass(frozen=True)
class RetrieverIndex:
    """How the index followed the production retriever: an index it built was activated, a
    refresh was queued to build one, or (both None) the active index was built by it already."""

    activated: IndexVersion | None = None
    refresh_job: Job | None = None


def embedding_model_version_production(*, project: Project) -> EmbeddingModelVersion | None:
    """The production retriever; None when the bundled (or configured) model is the one."""
    return EmbeddingModelVersion.objects.filter(
        project=project, status=RetrieverStatus.PRODUCTION
    ).first()


def _built_by(version: IndexVersion, retriever: EmbeddingModelVersion | None) -> bool:
    if retriever is not None:
        return version.embedding_model_version_id == retriever.pk
    return version.embedding_model_version_id is None and (
        version.embedding_model == embedding_model_name()
    )


def retriever_index_follow(
    *,
    project: Project,
    parent_job: Job | None = None,
    trigger: str | None = None,
    triggered_by=None,
) -> RetrieverIndex:
    """Make retrieval read an index built by the production retriever: when the active index
    is not, the most recent ready or retired version built by it is activated, or failing one
    an index refresh is queued (it builds with the production retriever)."""
    production = embedding_model_version_production(project=project)
    active = active_index_version(project=project)
    if active is not None and _built_by(active, production):
        return RetrieverIndex()
    built = IndexVersion.objects.filter(
        project=project,
        status__in=[IndexVersion.Status.READY, IndexVersion.Status.RETIRED],
        embedding_model_version=production,
    ).order_by("-number")
    match = next((version for version in built if _built_by(version, production)), None)
    if match is not None:
        return RetrieverIndex(activated=_index_version_switch(match))
    refresh = job_create(
        project=project,
        kind=Job.Kind.INDEX_REFRESH,
        trigger=trigger or (Job.Trigger.JOB if parent_job else Job.Trigger.API),
        triggered_by=triggered_by,
        parent=parent_job,
    )
    return RetrieverIndex(refresh_job=refresh)


def embedding_model_version_promote(
    *,
    version: EmbeddingModelVersion,
    parent_job: Job | None = None,
    trigger: str | None = None,
    triggered_by=None,
) -> EmbeddingModelVersion:
    """Make `version` the production retriever; the current one is retired (kept). The index
    follows in the same transaction (`retriever_index_follow`): for a new retriever, an index
    refresh is queued (a child of `parent_job` when given) to embed the index with it."""
    with transaction.atomic():
        version = _production_switch(version)
        retriever_index_follow(
            project=version.project,
            parent_job=parent_job,
            trigger=trigger,
            triggered_by=triggered_by,
        )
    return version


def embedding_model_version_previous(*, project: Project) -> EmbeddingModelVersion | None:
    """The retriever that was in production before the current one (None: the bundled one)."""
    return _previous_production(EmbeddingModelVersion, project=project)


def embedding_model_version_rollback(
    *, project: Project, trigger: str | None = None, triggered_by=None
) -> EmbeddingModelVersion | None:
    """Put the previous production retriever back, and an index that it built
    (`retriever_index_follow`: the most recent one it built is activated, or a refresh queued).

    Returns the restored version, or None when the bundled model serves again (the current
    retriever was the first fine-tuned one to be promoted). With the bundled model serving
    after such a rollback, the retriever it replaced comes back, as model rollback toggles.
    Raises NothingToRollBack when no fine-tuned retriever was ever promoted.
    """
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        current = embedding_model_version_production(project=project)
        previous = embedding_model_version_previous(project=project)
        if previous is not None:
            return embedding_model_version_promote(
                version=previous, trigger=trigger, triggered_by=triggered_by
            )
        if current is None:
            raise NothingToRollBack("No fine-tuned retriever was ever in production.")
        EmbeddingModelVersion.objects.filter(pk=current.pk).update(
            status=RetrieverStatus.RETIRED, updated_at=timezone.now()
        )
        retriever_index_follow(project=project, trigger=trigger, triggered_by=triggered_by)
    return None


def embedding_model_version_reject(*, version: EmbeddingModelVersion) -> EmbeddingModelVersion:
    return _candidate_reject(version)
