"""Evaluation: a candidate model version against production on the served system — the same
questions, prompted by the serving prompt builder with the passages retrieval serves — then the
promotion gate on the paired per-example scores.

The questions are the eval split of the candidate's dataset version and an optional golden set.
Each side answers every question; each answer is scored by token F1, ROUGE-L and, when a judge
is configured, an LLM judge. Every answer and score is kept in the job's metrics.
"""

from flywheel.artifacts import artifact_folder
from flywheel.generation import GenerationError
from flywheel.ml.bundled import base_model_path
from flywheel.models import ModelVersion
from flywheel.selectors.retrieval import active_index_version
from flywheel.services.model_versions import model_version_production_ensure
from retrain.curation.policy import curation_policy_get
from retrain.evaluation.gate import promotion_gate_decide
from retrain.evaluation.judge import Judge, configured_judge
from retrain.evaluation.questions import (
    EvaluationQuestion,
    eval_split_questions,
    golden_set_questions,
)
from retrain.jobs.lifecycle import InvalidJobParameters
from retrain.jobs.parameters import (
    golden_set_load,
    reject_unknown,
    take_bool,
    take_golden_set,
    take_int,
)
from retrain.models import Job
from retrain.promotion import model_version_promote

SIDES = ("candidate", "production")
PER_EXAMPLE_METRICS = ("token_f1", "rouge_l", "judge")
# Share of the progress bar the answers take; the judge's grading takes the rest.
ANSWERING_PROGRESS = 80


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


def _answer_all(
    version: ModelVersion, questions: list[EvaluationQuestion], job: Job, on_progress
) -> tuple[list[dict], float]:
    """Each question's answer with its token F1 and ROUGE-L, and the reference answers' loss."""
    from retrain.evaluation.metrics import evaluate_model

    result = evaluate_model(
        base_model_path=version.base_model or base_model_path(),
        adapter_dir=artifact_folder(version.adapter_path) if version.adapter_path else None,
        records=questions,
        max_new_tokens=job.parameters["max_new_tokens"],
        on_progress=on_progress,
    )
    return [
        {
            "answer": answer["prediction"],
            "token_f1": answer["token_f1"],
            "rouge_l": answer["rouge_l"],
        }
        for answer in result.answers
    ], result.eval_loss


def _judge_all(judge: Judge, examples: list[dict], context, progress_from: float) -> None:
    """Add the judge's score (and its grade and reply) to each side of each example. A failing
    judge server leaves that answer unscored, which the gate leaves out."""
    calls = len(examples) * len(SIDES)
    done = failures = 0
    for example in examples:
        for side in SIDES:
            scored = example[side]
            try:
                judgement = judge.judge(
                    question=example["question"],
                    reference=example["reference"],
                    answer=scored["answer"],
                )
            except GenerationError as error:
                if failures == 0:
                    context.log(f"The judge failed (its answers stay unscored): {error}")
                failures += 1
                scored.update(judge=None, judge_error=str(error))
            else:
                scored.update(
                    judge=judgement.score, judge_grade=judgement.grade, judge_reply=judgement.reply
                )
            done += 1
            context.progress(
                progress_from + (95 - progress_from) * done / calls, f"judging {done}/{calls}"
            )


def _mean(values: list[float | None]) -> float | None:
    scored = [value for value in values if value is not None]
    return sum(scored) / len(scored) if scored else None


def _suite_summaries(examples: list[dict], losses: dict[tuple[str, str], float]) -> dict:
    """Per suite and side: the mean of each per-example metric and the reference loss."""
    summaries: dict = {}
    for suite in dict.fromkeys(example["suite"] for example in examples):
        in_suite = [example for example in examples if example["suite"] == suite]
        for side in SIDES:
            summary = {
                metric: _mean([example[side].get(metric) for example in in_suite])
                for metric in PER_EXAMPLE_METRICS
            }
            summary["eval_loss"] = losses[(suite, side)]
            summary["examples"] = len(in_suite)
            summaries.setdefault(suite, {})[side] = summary
    return summaries


def _questions(job: Job, candidate: ModelVersion, index_version) -> list[EvaluationQuestion]:
    limit = job.parameters["max_examples"]
    questions: list[EvaluationQuestion] = []
    if candidate.dataset_version_id:
        questions += eval_split_questions(
            project=job.project, dataset_version_id=candidate.dataset_version_id
        )[:limit]
    if job.parameters["golden_set"]:
        golden_set = golden_set_load(job.parameters["golden_set"])[:limit]
        questions += golden_set_questions(
            project=job.project, golden_set=golden_set, index_version=index_version
        )
    return questions


def run(job: Job, context) -> None:
    candidate = ModelVersion.objects.filter(
        project=job.project, pk=job.parameters["model_version"]
    ).first()
    if candidate is None:
        raise InvalidJobParameters("the model version is not in this project")
    production = model_version_production_ensure(project=job.project)
    index_version = active_index_version(project=job.project)
    Job.objects.filter(pk=job.pk).update(
        model_version=candidate, dataset_version_id=candidate.dataset_version_id
    )
    judge = configured_judge()
    questions = _questions(job, candidate, index_version)
    metrics: dict = {
        "candidate": candidate.name,
        "production": production.name,
        "index_version": index_version.number if index_version else None,
        "judge": judge.describe() if judge else None,
        "suites": {},
    }
    examples = [
        {
            "suite": question.suite,
            "question": question.question,
            "reference": question.chosen,
            "sources": question.sources,
        }
        for question in questions
    ]
    if not questions:
        context.log("Nothing to evaluate on: no eval examples and no golden set")

    suites = list(dict.fromkeys(question.suite for question in questions))
    runs = [(suite, side) for suite in suites for side in SIDES]
    losses: dict[tuple[str, str], float] = {}
    for number, (suite, side) in enumerate(runs):
        positions = [i for i, question in enumerate(questions) if question.suite == suite]

        def on_progress(done, total, number=number, label=f"{suite}: {side}"):
            context.progress(
                ANSWERING_PROGRESS * (number + done / max(total, 1)) / len(runs),
                f"{label} {done}/{total}",
            )

        version = candidate if side == "candidate" else production
        answers, losses[(suite, side)] = _answer_all(
            version, [questions[i] for i in positions], job, on_progress
        )
        for position, answer in zip(positions, answers, strict=True):
            examples[position][side] = answer
    if judge is not None and examples:
        _judge_all(judge, examples, context, progress_from=ANSWERING_PROGRESS)
    metrics["suites"] = _suite_summaries(examples, losses)
    metrics["examples"] = examples

    policy = curation_policy_get(project=job.project)
    decision = promotion_gate_decide(
        metric=policy.promotion_metric,
        margin=policy.promotion_margin,
        min_examples=policy.min_eval_examples,
        pairs=[
            (
                example["candidate"].get(policy.promotion_metric),
                example["production"].get(policy.promotion_metric),
            )
            for example in examples
        ],
    )
    metrics["gate"] = decision.as_dict()
    context.record_metrics(**metrics)
    # The version keeps the summary and the decision; the answers stay with the job.
    summary = {name: value for name, value in metrics.items() if name != "examples"}
    candidate.metrics = {**candidate.metrics, "evaluation": {**summary, "job": job.pk}}
    candidate.save(update_fields=["metrics", "updated_at"])
    context.log(f"Gate: {decision.label}: {decision.reason}")
    promotable = candidate.status == ModelVersion.Status.CANDIDATE and candidate != production
    if decision.promotes and job.parameters["auto_promote"] and promotable:
        model_version_promote(version=candidate, actor=f"evaluation job {job.pk}")
        context.log(f"Promoted {candidate.name} to production")
    elif promotable:
        context.log(f"{candidate.name} waits for an admin's decision")
