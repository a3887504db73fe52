"""Retriever training: the embedding model fine-tuned on (question, passage) pairs from
feedback, measured against the production retriever on held-out questions, promoted when it
finds their passages at least as well; the index is then re-embedded by it (a refresh job).
"""

import math
import shutil
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from flywheel.artifacts import (
    LocalArtifactStore,
    artifact_folder,
    artifact_publish,
    artifact_store,
)
from flywheel.ml.bundled import embedding_model_path
from flywheel.ml.loading import torch_threads_limit
from flywheel.models import Chunk, EmbeddingModelVersion
from flywheel.selectors.retrieval import active_index_version
from flywheel.services.indexing import passage_for_embedding
from retrain.jobs.lifecycle import InvalidJobParameters, JobCancelled
from retrain.jobs.pace import StepPace
from retrain.jobs.parameters import take_bool, take_int
from retrain.models import Job
from retrain.promotion import (
    embedding_model_version_production,
    embedding_model_version_promote,
    embedding_model_version_reject,
)
from retrain.training.retriever import (
    RetrieverPair,
    RetrieverTrainingParameters,
    RetrieverTrainingStopped,
    pairs_split,
    retrieval_hits,
    retriever_train,
)
from retrain.training.retriever_pairs import retriever_pairs_from_feedback

JOB_OPTIONS = ("eval_fraction", "min_pairs", "auto_promote", "margin")
DEFAULT_EVAL_FRACTION = 0.25
DEFAULT_MIN_PAIRS = 8


class NotEnoughFeedback(Exception):
    """Too few (question, passage) pairs came out of the feedback to train and measure on."""


def _take_fraction(values: dict, name: str, default: float, *, below_one: bool) -> float:
    value = values.pop(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidJobParameters(f"{name} must be a number")
    if below_one and not 0 < value < 1:
        raise InvalidJobParameters(f"{name} must be above 0 and below 1")
    if not below_one and not 0 <= value <= 1:
        raise InvalidJobParameters(f"{name} must be from 0 to 1")
    return float(value)


def validate_parameters(values: dict) -> dict:
    job_options = {
        # Held-out questions are the evidence promotion needs: there must be some.
        "eval_fraction": _take_fraction(
            values, "eval_fraction", DEFAULT_EVAL_FRACTION, below_one=True
        ),
        "min_pairs": take_int(values, "min_pairs", DEFAULT_MIN_PAIRS, minimum=2),
        "auto_promote": take_bool(values, "auto_promote", True),
        # hit@1 the candidate must gain over production to be promoted.
        "margin": _take_fraction(values, "margin", 0.0, below_one=False),
    }
    try:
        training = RetrieverTrainingParameters.from_dict(values)
    except (TypeError, ValueError) as error:
        raise InvalidJobParameters(str(error)) from error
    return {**job_options, **training.as_dict()}


def job_artifact_key(job: Job) -> str:
    return f"{job.project.slug}/retrievers/job-{job.pk}"


def job_output_dir(job: Job) -> Path:
    """The worker's working folder for the job; with the local store, the stored folder."""
    return Path(settings.FLYWHEEL_ARTIFACTS_DIR) / job_artifact_key(job)


def _corpus(job: Job) -> list[str]:
    """The active index's document passages, as the index embeds them."""
    index_version = active_index_version(project=job.project)
    if index_version is None:
        raise NotEnoughFeedback("The project has no active index to measure retrieval on.")
    chunks = (
        Chunk.objects.filter(index_version=index_version, kind=Chunk.Kind.DOCUMENT)
        .select_related("document")
        .only("heading", "text", "document__title")
        .order_by("pk")
    )
    return [
        passage_for_embedding(
            title=chunk.document.title if chunk.document else "",
            heading=chunk.heading,
            text=chunk.text,
        )
        for chunk in chunks
    ]


def _rounded(hits: dict) -> dict:
    return {
        key: round(value, 4) if isinstance(value, float) else value for key, value in hits.items()
    }


def _measure(
    *, candidate_path: Path, production_path: Path, pairs: list[RetrieverPair], corpus: list[str]
) -> tuple[dict, dict]:
    if not pairs:
        return {}, {}
    candidate = retrieval_hits(model_path=candidate_path, pairs=pairs, corpus=corpus)
    production = retrieval_hits(model_path=production_path, pairs=pairs, corpus=corpus)
    return _rounded(candidate), _rounded(production)


def _version_create(job: Job, **fields) -> EmbeddingModelVersion:
    """A new version named retriever-<n>, n one more than the project has (or the first free
    one, should another job take that name at the same moment)."""
    count = EmbeddingModelVersion.objects.filter(project=job.project).count()
    for number in range(count + 1, count + 100):
        try:
            with transaction.atomic():
                return EmbeddingModelVersion.objects.create(
                    project=job.project, name=f"retriever-{number}", **fields
                )
        except IntegrityError:
            if not EmbeddingModelVersion.objects.filter(
                project=job.project, name=f"retriever-{number}"
            ).exists():
                raise
    raise IntegrityError("no free retriever name")


def promotion_decide(*, candidate: dict, production: dict, margin: float) -> tuple[bool, str]:
    """Promote when the candidate finds the held-out passages first at least `margin` more
    often than production and within the top five at least as often."""
    if not candidate or not candidate.get("n"):
        return False, "no held-out question to measure on"
    gain = candidate["hit@1"] - production["hit@1"]
    if gain + 1e-9 < margin:
        return False, (
            f"hit@1 {candidate['hit@1']:.3f} against production's {production['hit@1']:.3f}: "
            f"a gain of {gain:+.3f}, below the margin {margin:.3f}"
        )
    if candidate["hit@5"] + 1e-9 < production["hit@5"]:
        return False, (
            f"hit@5 {candidate['hit@5']:.3f} is below production's {production['hit@5']:.3f}"
        )
    return True, (
        f"hit@1 {candidate['hit@1']:.3f} (production {production['hit@1']:.3f}, margin "
        f"{margin:.3f}), hit@5 {candidate['hit@5']:.3f} (production {production['hit@5']:.3f})"
    )


def run(job: Job, context) -> None:
    torch_threads_limit()
    options = {key: job.parameters[key] for key in JOB_OPTIONS}
    parameters = RetrieverTrainingParameters.from_dict(
        {k: v for k, v in job.parameters.items() if k not in JOB_OPTIONS}
    )
    candidate = EmbeddingModelVersion.objects.filter(
        project=job.project, training_job_id=job.pk
    ).first()
    if candidate is not None:
        # An earlier attempt of this job trained, measured and decided, then its worker died.
        context.log(f"Candidate {candidate.name} was made by an earlier attempt of this job")
    else:
        candidate = _train_and_measure(job, context, options=options, parameters=parameters)
    _decision_apply(job, context, candidate=candidate)


def _train_and_measure(
    job: Job, context, *, options: dict, parameters: RetrieverTrainingParameters
) -> EmbeddingModelVersion:
    """Train a candidate, measure it and production on the held-out pairs, decide, and save
    it (measurements and decision included) as a candidate version."""
    project = job.project
    context.progress(2, "Collecting (question, passage) pairs from feedback")
    pairs = retriever_pairs_from_feedback(project=project)
    questions = len({pair.question for pair in pairs})
    context.record_metrics(pairs={"total": len(pairs), "questions": questions})
    if len(pairs) < options["min_pairs"] or questions < 2:
        message = (
            f"Only {len(pairs)} (question, passage) pairs came out of the feedback "
            f"({questions} distinct questions); retriever training needs at least "
            f"{options['min_pairs']}. Approve or correct more answers, or lower min_pairs."
        )
        context.log(message)
        raise NotEnoughFeedback(message)
    train, held_out = pairs_split(
        pairs, eval_fraction=options["eval_fraction"], seed=parameters.seed
    )
    if len({(pair.question, pair.positive) for pair in train}) < 2:
        message = (
            f"Only {len(train)} training pairs are left once {len(held_out)} are held out; "
            "retriever training needs at least 2. Lower eval_fraction or gather more feedback."
        )
        context.log(message)
        raise NotEnoughFeedback(message)
    corpus = _corpus(job)
    in_corpus = set(corpus)
    # A held-out passage the active index no longer holds cannot be ranked there.
    measured = [pair for pair in held_out if pair.positive in in_corpus]
    counts = {
        "total": len(pairs),
        "questions": questions,
        "train": len(train),
        "held_out": len(held_out),
        "held_out_measured": len(measured),
        "with_hard_negatives": sum(1 for pair in pairs if pair.negatives),
        "corpus_passages": len(in_corpus),
    }
    context.record_metrics(pairs=counts)
    context.log(
        f"{len(pairs)} pairs from feedback: {len(train)} to train on, {len(held_out)} held out"
    )

    production = embedding_model_version_production(project=project)
    base_path = artifact_folder(production.path) if production else embedding_model_path()
    base_name = production.name if production is not None else "bundled"
    output_dir = job_output_dir(job)
    loss_curve: list[dict] = []

    pace = StepPace()

    def on_step(step: int, total: int, loss: float) -> None:
        loss_curve.append({"step": step, "loss": round(loss, 5)})
        context.record_metrics(
            loss_curve=loss_curve, steps_total=total, pace=pace.observe(step=step, total=total)
        )
        context.progress(5 + 80 * step / max(total, 1), f"Step {step} of {total}, loss {loss:.4f}")

    context.log(f"Training from the {base_name} retriever")
    try:
        result = retriever_train(
            pairs=train,
            base_model_path=base_path,
            output_dir=output_dir,
            parameters=parameters,
            progress=on_step,
            should_stop=context.should_stop,
        )
    except (RetrieverTrainingStopped, JobCancelled) as stopped:
        shutil.rmtree(output_dir, ignore_errors=True)
        raise JobCancelled() from stopped

    context.progress(88, "Measuring the candidate and production on held-out questions")
    try:
        held_candidate, held_production = _measure(
            candidate_path=output_dir, production_path=base_path, pairs=measured, corpus=corpus
        )
        train_candidate, train_production = _measure(
            candidate_path=output_dir,
            production_path=base_path,
            pairs=[pair for pair in train if pair.positive in in_corpus],
            corpus=corpus,
        )
        context.stop_if_cancelled()
    except JobCancelled:
        shutil.rmtree(output_dir, ignore_errors=True)
        raise
    passed, reason = promotion_decide(
        candidate=held_candidate, production=held_production, margin=options["margin"]
    )
    decision = {"passed": passed, "promote": passed and options["auto_promote"], "reason": reason}
    if passed and not options["auto_promote"]:
        decision["reason"] = f"{reason}; auto_promote is off: left as a candidate"
    # Folders stay out of the metrics: API clients see them.
    training = {k: v for k, v in result.as_dict().items() if k != "output_dir"}
    metrics = {
        "held_out": held_candidate,
        "production": held_production,
        "train_pairs": {"candidate": train_candidate, "production": train_production},
        "pairs": counts,
        "training": training,
        "parameters": parameters.as_dict(),
        "base": base_name,
        "decision": decision,
    }
    reference = artifact_publish(folder=output_dir, key=job_artifact_key(job))
    if not isinstance(artifact_store(), LocalArtifactStore):
        shutil.rmtree(output_dir, ignore_errors=True)  # kept in the bucket now
    candidate = _version_create(
        job,
        path=reference,
        status=EmbeddingModelVersion.Status.CANDIDATE,
        metrics=metrics,
        training_job_id=job.pk,
        parent=production,
    )
    context.record_metrics(
        candidate=candidate.name,
        embedding_model_version_id=candidate.pk,
        held_out={"candidate": held_candidate, "production": held_production},
        train_loss=result.train_loss,
        steps=result.steps,
        loss_curve=loss_curve,
    )
    context.log(
        f"Candidate {candidate.name}: held-out hit@1 {held_candidate.get('hit@1')} "
        f"(production {held_production.get('hit@1')}), hit@5 {held_candidate.get('hit@5')} "
        f"(production {held_production.get('hit@5')})"
    )
    return candidate


def _decision_apply(job: Job, context, *, candidate: EmbeddingModelVersion) -> None:
    """Promote the candidate (the index refresh it needs is queued as this job's child) or
    reject it, as its recorded decision says."""
    decision = dict(candidate.metrics.get("decision") or {})
    if candidate.status == EmbeddingModelVersion.Status.CANDIDATE:
        if decision.get("promote"):
            embedding_model_version_promote(
                version=candidate, parent_job=job, triggered_by=job.triggered_by
            )
        elif not decision.get("passed"):
            embedding_model_version_reject(version=candidate)
    candidate.refresh_from_db()
    decision["status"] = candidate.status
    decision["promoted"] = candidate.status == EmbeddingModelVersion.Status.PRODUCTION
    refresh = Job.objects.filter(parent=job, kind=Job.Kind.INDEX_REFRESH).order_by("-pk").first()
    decision["index_refresh_job_id"] = refresh.pk if refresh is not None else None
    context.record_metrics(decision=decision)
    if decision["promoted"]:
        context.log(f"{candidate.name} promoted: {decision.get('reason')}")
        if refresh is not None:
            context.log(f"Index refresh queued as job {refresh.pk} to re-embed the index")
    else:
        context.log(f"{candidate.name} is {candidate.status}: {decision.get('reason')}")
