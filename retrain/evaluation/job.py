"""Evaluation: a candidate model version against production, on the eval split of the
candidate's dataset version and an optional golden set; then the promotion gate."""

from flywheel.ml.bundled import base_model_path
from flywheel.models import ModelVersion
from flywheel.services.chat import prompt_messages_build
from flywheel.services.model_versions import model_version_production_ensure
from retrain.curation.policy import curation_policy_get
from retrain.evaluation.gate import promotion_gate_decide
from retrain.jobs.lifecycle import InvalidJobParameters
from retrain.jobs.parameters import (
    golden_set_load,
    reject_unknown,
    take_bool,
    take_golden_set,
    take_int,
)
from retrain.models import DatasetRecord, Job
from retrain.promotion import model_version_promote


def validate_parameters(values: dict) -> dict:
    normalised = {
        "model_version": take_int(values, "model_version", None),
        "max_examples": take_int(values, "max_examples", 50, maximum=10_000),
        "max_new_tokens": take_int(values, "max_new_tokens", 64, maximum=1024),
        "auto_promote": take_bool(values, "auto_promote", True),
        "golden_set": take_golden_set(values),
    }
    if normalised["model_version"] is None:
        raise InvalidJobParameters("model_version is required")
    reject_unknown(values)
    return normalised


class _GoldenRecord:
    """A golden-set question shaped like a dataset record: prompted as serving would."""

    def __init__(self, *, project, question: str, answer: str):
        self.prompt = prompt_messages_build(
            project=project, messages=[{"role": "user", "content": question}], passages=None
        )
        self.chosen = answer


def _evaluate(version: ModelVersion, records, job: Job, on_progress) -> dict:
    from retrain.evaluation.metrics import evaluate_model

    adapter = version.adapter_path or None
    result = evaluate_model(
        base_model_path=version.base_model or base_model_path(),
        adapter_dir=adapter,
        records=records,
        max_new_tokens=job.parameters["max_new_tokens"],
        max_examples=job.parameters["max_examples"],
        on_progress=on_progress,
    )
    return result.as_dict()


def run(job: Job, context) -> None:
    candidate = ModelVersion.objects.filter(
        project=job.project, pk=job.parameters["model_version"]
    ).first()
    if candidate is None:
        raise InvalidJobParameters("the model version is not in this project")
    production = model_version_production_ensure(project=job.project)
    Job.objects.filter(pk=job.pk).update(
        model_version=candidate, dataset_version_id=candidate.dataset_version_id
    )
    suites = {}
    if candidate.dataset_version_id:
        suites["eval_split"] = list(
            DatasetRecord.objects.filter(
                dataset_version_id=candidate.dataset_version_id,
                kind=DatasetRecord.Kind.SFT,
                split="eval",
            )
        )
    if job.parameters["golden_set"]:
        suites["golden_set"] = [
            _GoldenRecord(project=job.project, question=g["question"], answer=g["answer"])
            for g in golden_set_load(job.parameters["golden_set"])
        ]
    suites = {name: records for name, records in suites.items() if records}
    if not suites:
        context.log("Nothing to evaluate on: no eval examples and no golden set")

    metrics: dict = {"candidate": candidate.name, "production": production.name, "suites": {}}
    runs = [
        (suite, side, version)
        for suite in suites
        for side, version in (("candidate", candidate), ("production", production))
    ]
    for number, (suite, side, version) in enumerate(runs):

        def on_progress(done, total, number=number, label=f"{suite}: {side}"):
            context.progress(
                95 * (number + done / max(total, 1)) / len(runs), f"{label} {done}/{total}"
            )

        scores = _evaluate(version, suites[suite], job, on_progress)
        metrics["suites"].setdefault(suite, {})[side] = scores
        context.record_metrics(**metrics)

    policy = curation_policy_get(project=job.project)
    headline = metrics["suites"].get("eval_split") or metrics["suites"].get("golden_set") or {}
    decision = promotion_gate_decide(
        metric=policy.promotion_metric,
        margin=policy.promotion_margin,
        candidate=headline.get("candidate", {}),
        production=headline.get("production", {}),
    )
    metrics["gate"] = decision.as_dict()
    context.record_metrics(**metrics)
    candidate.metrics = {**candidate.metrics, "evaluation": metrics}
    candidate.save(update_fields=["metrics", "updated_at"])
    context.log(decision.reason)
    promotable = candidate.status == ModelVersion.Status.CANDIDATE and candidate != production
    if decision.passed and job.parameters["auto_promote"] and promotable:
        model_version_promote(version=candidate)
        context.log(f"Promoted {candidate.name} to production")
    elif promotable:
        context.log(f"{candidate.name} waits for an admin's decision")
