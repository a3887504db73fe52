"""LoRA training: an adapter trained on a dataset version's train split becomes a candidate
model version, which an evaluation job then compares with production."""

import shutil
from pathlib import Path

from django.conf import settings

from flywheel.artifacts import LocalArtifactStore, artifact_publish, artifact_store
from flywheel.ml.bundled import base_model_path
from flywheel.models import ModelVersion, Project
from flywheel.services.model_versions import model_version_production_ensure
from retrain.curation.policy import curation_policy_get
from retrain.datasets.snapshot import dataset_eval_shortfall, dataset_snapshot
from retrain.jobs.lifecycle import InvalidJobParameters, JobCancelled, job_create
from retrain.jobs.pace import StepPace
from retrain.jobs.parameters import golden_set_load, take_bool, take_golden_set, take_int
from retrain.models import DatasetRecord, DatasetVersion, InstructionExample, Job


def validate_parameters(values: dict) -> dict:
    from retrain.training.lora import TrainingParameters

    job_options = {
        "dataset_version": take_int(values, "dataset_version", None),
        "evaluate": take_bool(values, "evaluate", True),
        "auto_promote": take_bool(values, "auto_promote", True),
        # Handed on to the evaluation this run queues.
        "golden_set": take_golden_set(values),
        "evaluation_max_new_tokens": take_int(
            values, "evaluation_max_new_tokens", 64, maximum=1024
        ),
    }
    try:
        training = TrainingParameters.from_dict(values)
    except ValueError as error:
        raise InvalidJobParameters(str(error)) from error
    return {**job_options, **training.as_dict()}


def _golden_set_size(parameters: dict) -> int:
    name = parameters.get("golden_set")
    return len(golden_set_load(name)) if name else 0


def check_parameters_for_project(project: Project, parameters: dict) -> None:
    """Refuse a run whose candidate could never be judged: with evaluate=true, the dataset's
    eval split and the golden set together must hold the policy's minimum for the promotion
    gate. Without a dataset version, the examples a snapshot would freeze now are counted;
    the run checks again on the version it trains on."""
    if not parameters["evaluate"]:
        return
    min_eval_examples = curation_policy_get(project=project).min_eval_examples
    number = parameters["dataset_version"]
    if number is None:
        eval_examples = InstructionExample.objects.filter(
            project=project,
            status=InstructionExample.Status.INCLUDED,
            split=InstructionExample.Split.EVAL,
        ).count()
        subject = "The curated examples"
    else:
        version = DatasetVersion.objects.filter(project=project, number=number).first()
        if version is None:
            raise InvalidJobParameters(f"no dataset version {number}")
        eval_examples = version.counts["eval"]
        subject = f"Dataset v{number}"
    shortfall = dataset_eval_shortfall(
        eval_examples=eval_examples,
        min_eval_examples=min_eval_examples,
        golden_examples=_golden_set_size(parameters),
    )
    if shortfall:
        raise InvalidJobParameters(f"{subject}: {shortfall}")


JOB_OPTIONS = {
    "dataset_version",
    "evaluate",
    "auto_promote",
    "golden_set",
    "evaluation_max_new_tokens",
}


def job_artifact_key(job: Job) -> str:
    """Where the job's adapter and checkpoint are stored (`<key>/adapter`, `<key>/checkpoint`):
    stable per job, so a retried job, on whichever worker, finds its checkpoint and resumes."""
    return f"{job.project.slug}/jobs/{job.pk}"


def job_output_dir(job: Job) -> Path:
    """The worker's working folder for the job; with the local store, the stored folder."""
    return Path(settings.FLYWHEEL_ARTIFACTS_DIR) / job_artifact_key(job)


def _checkpoint_fetch(*, key: str, local: Path) -> None:
    """Bring the job's stored checkpoint here when this worker has none (an earlier attempt
    ran elsewhere); lora_train then resumes from it."""
    store = artifact_store()
    if not (local / "progress.json").exists() and store.exists(key):
        store.get_folder(key, local)


def _dataset_for(job: Job) -> DatasetVersion:
    number = job.parameters.get("dataset_version")
    if number is not None:
        version = DatasetVersion.objects.filter(project=job.project, number=number).first()
        if version is None:
            raise InvalidJobParameters(f"no dataset version {number}")
        return version
    version, _ = dataset_snapshot(
        project=job.project, trigger=DatasetVersion.Trigger.JOB, created_by=job.triggered_by
    )
    return version


def run(job: Job, context) -> None:
    from retrain.training.lora import (
        CHECKPOINT_DIRNAME,
        TrainingParameters,
        TrainingStopped,
        lora_train,
    )

    dataset = _dataset_for(job)
    Job.objects.filter(pk=job.pk).update(dataset_version=dataset)
    if job.parameters.get("evaluate", True):
        shortfall = dataset_eval_shortfall(
            eval_examples=dataset.counts["eval"],
            min_eval_examples=curation_policy_get(project=job.project).min_eval_examples,
            golden_examples=_golden_set_size(job.parameters),
        )
        if shortfall:
            raise InvalidJobParameters(f"Dataset v{dataset.number}: {shortfall}")
    records = list(
        dataset.records.filter(kind=DatasetRecord.Kind.SFT, split="train").order_by("pk")
    )
    if not records:
        raise InvalidJobParameters(f"dataset v{dataset.number} has no training examples")
    parameters = TrainingParameters.from_dict(
        {k: v for k, v in job.parameters.items() if k not in JOB_OPTIONS}
    )
    output_dir = job_output_dir(job)
    store = artifact_store()
    artifact_key = job_artifact_key(job)
    checkpoint_key = f"{artifact_key}/{CHECKPOINT_DIRNAME}"
    _checkpoint_fetch(key=checkpoint_key, local=output_dir / CHECKPOINT_DIRNAME)
    loss_curve: list[dict] = list(job.metrics.get("loss_curve", []))

    pace = StepPace()

    def on_step(step: int, total: int, loss: float, tokens_trained: int) -> None:
        # After a resume the steps since the last checkpoint come again: keep the new ones.
        loss_curve[:] = [point for point in loss_curve if point["step"] < step]
        loss_curve.append({"step": step, "loss": round(loss, 5)})
        context.record_metrics(
            loss_curve=loss_curve,
            steps_total=total,
            pace=pace.observe(step=step, total=total, tokens=tokens_trained),
        )
        context.progress(95 * step / total, f"Step {step} of {total}, loss {loss:.4f}")

    context.log(f"Training on dataset v{dataset.number}: {len(records)} examples")
    try:
        result = lora_train(
            base_model_path=base_model_path(),
            records=records,
            parameters=parameters,
            output_dir=output_dir,
            on_step=on_step,
            should_stop=context.should_stop,
            log=context.log,
            metadata={
                "project": job.project.slug,
                "job": job.pk,
                "dataset_version": dataset.number,
                "dataset_hash": dataset.content_hash,
            },
            on_checkpoint=lambda folder: store.put_folder(folder, checkpoint_key),
        )
    except (TrainingStopped, JobCancelled) as stopped:
        # Cancelled, whether noticed by the loop or by a progress report: nothing of a
        # cancelled run is kept.
        shutil.rmtree(output_dir, ignore_errors=True)
        store.delete(artifact_key)
        raise JobCancelled() from stopped
    adapter = artifact_publish(
        folder=result.adapter_dir, key=f"{artifact_key}/{result.adapter_dir.name}"
    )

    production = model_version_production_ensure(project=job.project)
    candidate = ModelVersion.objects.create(
        project=job.project,
        name=f"lora-job-{job.pk}",
        base_model="",
        adapter_path=adapter,
        status=ModelVersion.Status.CANDIDATE,
        dataset_version_id=dataset.pk,
        training_job_id=job.pk,
        parent=production,
        created_by=job.triggered_by,
        metrics={
            "training": {
                "train_loss": result.train_loss,
                "steps": result.steps,
                "tokens_trained": result.tokens_trained,
                "tokens_per_second": round(result.tokens_per_second, 1),
                "resumed_from_step": result.resumed_from_step,
                "device": result.device,
            }
        },
    )
    Job.objects.filter(pk=job.pk).update(model_version=candidate)
    if not isinstance(store, LocalArtifactStore):
        # The adapter is in the bucket now; the checkpoint it finished is of no further use.
        store.delete(checkpoint_key)
        shutil.rmtree(output_dir, ignore_errors=True)
    context.record_metrics(
        loss_curve=result.loss_curve,
        train_loss=result.train_loss,
        steps=result.steps,
        tokens_per_second=round(result.tokens_per_second, 1),
        resumed_from_step=result.resumed_from_step,
        candidate=candidate.name,
    )
    # The log is shown through the API: where the adapter lies stays on the server.
    context.log(f"Candidate {candidate.name} saved")
    if job.parameters.get("evaluate", True):
        evaluation = job_create(
            project=job.project,
            kind=Job.Kind.EVALUATION,
            trigger=Job.Trigger.JOB,
            triggered_by=job.triggered_by,
            parent=job,
            parameters={
                "model_version": candidate.pk,
                "auto_promote": job.parameters.get("auto_promote", True),
                "golden_set": job.parameters.get("golden_set"),
                "max_new_tokens": job.parameters.get("evaluation_max_new_tokens", 64),
            },
        )
        context.log(f"Evaluation queued as job {evaluation.pk}")
