"""LoRA training: an adapter trained on a dataset version's train split becomes a candidate
model version, which an evaluation job then compares with production."""

import shutil
from pathlib import Path

from django.conf import settings

from flywheel.ml.bundled import base_model_path
from flywheel.models import ModelVersion
from flywheel.services.model_versions import model_version_production_ensure
from retrain.datasets.snapshot import dataset_snapshot
from retrain.jobs.lifecycle import InvalidJobParameters, JobCancelled, job_create
from retrain.jobs.parameters import take_bool, take_golden_set, take_int
from retrain.models import DatasetRecord, DatasetVersion, Job


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


JOB_OPTIONS = {
    "dataset_version",
    "evaluate",
    "auto_promote",
    "golden_set",
    "evaluation_max_new_tokens",
}


def job_output_dir(job: Job) -> Path:
    """Stable per job, so a retried job finds its own checkpoint and resumes."""
    return Path(settings.FLYWHEEL_ARTIFACTS_DIR) / job.project.slug / "jobs" / str(job.pk)


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
    from retrain.training.lora import TrainingParameters, TrainingStopped, lora_train

    dataset = _dataset_for(job)
    Job.objects.filter(pk=job.pk).update(dataset_version=dataset)
    records = list(
        dataset.records.filter(kind=DatasetRecord.Kind.SFT, split="train").order_by("pk")
    )
    if not records:
        raise InvalidJobParameters(f"dataset v{dataset.number} has no training examples")
    parameters = TrainingParameters.from_dict(
        {k: v for k, v in job.parameters.items() if k not in JOB_OPTIONS}
    )
    output_dir = job_output_dir(job)
    loss_curve: list[dict] = list(job.metrics.get("loss_curve", []))

    def on_step(step: int, total: int, loss: float) -> None:
        # After a resume the steps since the last checkpoint come again: keep the new ones.
        loss_curve[:] = [point for point in loss_curve if point["step"] < step]
        loss_curve.append({"step": step, "loss": round(loss, 5)})
        context.record_metrics(loss_curve=loss_curve, steps_total=total)
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
        )
    except (TrainingStopped, JobCancelled) as stopped:
        # Cancelled, whether noticed by the loop or by a progress report: nothing of a
        # cancelled run is kept.
        shutil.rmtree(output_dir, ignore_errors=True)
        raise JobCancelled() from stopped

    production = model_version_production_ensure(project=job.project)
    candidate = ModelVersion.objects.create(
        project=job.project,
        name=f"lora-job-{job.pk}",
        base_model="",
        adapter_path=str(result.adapter_dir),
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
    context.record_metrics(
        loss_curve=result.loss_curve,
        train_loss=result.train_loss,
        steps=result.steps,
        tokens_per_second=round(result.tokens_per_second, 1),
        resumed_from_step=result.resumed_from_step,
        candidate=candidate.name,
    )
    context.log(f"Candidate {candidate.name} saved to {result.adapter_dir}")
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
