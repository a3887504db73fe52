"""Evaluating a running experiment — after ratings arrive and once a minute — and acting on
what the figures decide: the safety check first, then the sequential test's verdict and the
experiment's policy (promote a winner, stop on a loss), and the deadline."""

from django.db import transaction
from django.utils import timezone

from flywheel.models import ExperimentArm
from retrain.experiments.selectors import ExperimentReport, experiment_report
from retrain.experiments.services import experiment_end
from retrain.experiments.statistics import Verdict, safety_breach
from retrain.models import Experiment
from retrain.promotion import (
    index_version_activate,
    model_version_experiment_record,
    model_version_promote,
)
from retrain.transitions import TransitionRefused

Status = Experiment.Status
# Points kept of the confidence sequence's history, for the chart; older ones are thinned.
HISTORY_MAX_POINTS = 200
BY_SAFETY_CHECK = "safety check"
BY_VERDICT = "verdict"


def _history_add(experiment: Experiment, report: ExperimentReport) -> None:
    """One point per evaluation that saw new ratings; every other old point is dropped when
    the history is full, so it spans the whole experiment at a coarser grain."""
    control = report.arms[ExperimentArm.CONTROL].sample(experiment.metric).count
    candidate = report.arms[ExperimentArm.CANDIDATE].sample(experiment.metric).count
    difference = report.comparison.difference
    history = list(experiment.history)
    if history and (history[-1]["control"], history[-1]["candidate"]) == (control, candidate):
        return
    if difference.estimate is None:
        return
    history.append(
        {
            "at": timezone.now().isoformat(),
            "control": control,
            "candidate": candidate,
            "estimate": difference.estimate,
            "low": difference.low,
            "high": difference.high,
        }
    )
    if len(history) > HISTORY_MAX_POINTS:
        history = history[:-1:2] + history[-1:]
    experiment.history = history


def _verdict_reason(experiment: Experiment, report: ExperimentReport, verdict: str) -> str:
    difference = report.comparison.difference
    counts = {arm: report.arms[arm].sample(experiment.metric).count for arm in report.arms}
    label = Experiment.Verdict(verdict).label if verdict else "Undecided"
    if difference.estimate is None:
        return f"Experiment #{experiment.pk}: {label.lower()} (no ratings in an arm)."
    return (
        f"Experiment #{experiment.pk}: {label.lower()} on {experiment.get_metric_display()}: "
        f"candidate minus control {difference.estimate:+.3f}, 95% confidence sequence "
        f"{difference.low:+.3f} to {difference.high:+.3f}, over {counts['control']} control "
        f"and {counts['candidate']} candidate ratings."
    )


def _promote(experiment: Experiment, reason: str) -> dict:
    """Put the winner in production through the promotion service (the experiment's win is
    its evidence); what happened, for the experiment's evidence."""
    outcome: dict = {}
    actor = f"experiment #{experiment.pk}"
    if experiment.candidate_model_version is not None:
        try:
            promoted = model_version_promote(
                version=experiment.candidate_model_version, actor=actor
            )
        except TransitionRefused as refused:
            outcome["model_version"] = {"refused": refused.message, "code": refused.code}
        else:
            outcome["model_version"] = {"promoted": promoted.name}
    if experiment.candidate_index_version is not None:
        try:
            activated = index_version_activate(version=experiment.candidate_index_version)
        except TransitionRefused as refused:
            outcome["index_version"] = {"refused": refused.message, "code": refused.code}
        else:
            outcome["index_version"] = {"activated": activated.number}
    return outcome


def _verdict_act(experiment: Experiment, report: ExperimentReport, verdict: Verdict) -> None:
    """Record a new verdict and follow the experiment's policy; in the caller's transaction."""
    reason = _verdict_reason(experiment, report, verdict)
    experiment.verdict = verdict.value
    experiment.evidence = {
        **report.as_dict(),
        "reason": reason,
        "decided_at": timezone.now().isoformat(),
    }
    if experiment.candidate_model_version is not None and verdict != Verdict.NOT_ENOUGH_DATA:
        experiment.candidate_model_version = model_version_experiment_record(
            version=experiment.candidate_model_version,
            experiment_id=experiment.pk,
            verdict=verdict.value,
            reason=reason,
            evidence=report.comparison.as_dict(),
        )
    experiment.save(update_fields=["verdict", "evidence", "history", "evaluated_at"])
    if verdict == Verdict.CONTROL_WINS and not experiment.stop_on_loss:
        return  # it keeps serving until its deadline, or until it is stopped
    experiment_end(experiment, status=Status.FINISHED, reason=reason, by=BY_VERDICT)
    if verdict == Verdict.CANDIDATE_WINS and experiment.auto_promote:
        experiment.evidence = {**experiment.evidence, "promotion": _promote(experiment, reason)}
        experiment.save(update_fields=["evidence"])


def experiment_evaluate(*, experiment_id: int) -> Experiment | None:
    """Look at a running experiment's figures and act on them: a candidate that fails or
    slows down beyond the set factors is stopped; a verdict is recorded and followed; the
    deadline finishes it. Safe to run any number of times; None for an unknown id."""
    with transaction.atomic():
        experiment = (
            Experiment.objects.select_for_update(of=("self",))
            .select_related("project", "candidate_model_version", "candidate_index_version")
            .filter(pk=experiment_id)
            .first()
        )
        if experiment is None or experiment.status != Status.RUNNING:
            return experiment
        report = experiment_report(experiment=experiment)
        _history_add(experiment, report)
        experiment.evaluated_at = timezone.now()
        breach = safety_breach(
            control=report.arms[ExperimentArm.CONTROL].health,
            candidate=report.arms[ExperimentArm.CANDIDATE].health,
            error_rate_factor=experiment.error_rate_factor,
            latency_p95_factor=experiment.latency_p95_factor,
            min_requests=experiment.safety_min_requests,
        )
        if breach:
            experiment.evidence = {**report.as_dict(), "safety": breach}
            experiment.save(update_fields=["evidence", "history", "evaluated_at"])
            return experiment_end(
                experiment, status=Status.STOPPED, reason=breach, by=BY_SAFETY_CHECK
            )
        verdict = report.comparison.verdict
        if experiment.verdict:
            # A loss that keeps running (no early stop) keeps its verdict to the deadline.
            experiment.save(update_fields=["history", "evaluated_at"])
            if timezone.now() >= experiment.ends_at:
                experiment_end(
                    experiment,
                    status=Status.FINISHED,
                    reason=experiment.evidence.get("reason", ""),
                    by=BY_VERDICT,
                )
            return experiment
        if verdict == Verdict.UNDECIDED:
            experiment.save(update_fields=["history", "evaluated_at"])
            return experiment
        _verdict_act(experiment, report, verdict)
        return experiment


def experiments_evaluate_running() -> list[int]:
    """Evaluate every running experiment (the periodic sweep: deadlines and safety are
    checked even when no rating arrives); their ids."""
    running = list(Experiment.objects.filter(status=Status.RUNNING).values_list("pk", flat=True))
    for experiment_id in running:
        experiment_evaluate(experiment_id=experiment_id)
    return running
