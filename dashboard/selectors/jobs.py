"""Reads behind the dashboard's jobs and versions pages: the jobs list, one job with what it
reported (shaped for its page), and the model and index versions with their lineage.

Every function takes the project and reads nothing outside it; views reach these only through
`dashboard.views.access.project_view`, which checks the user's role in that project.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from flywheel.models import ModelVersion, Project
from retrain.evaluation.gate import GateDecision
from retrain.models import DatasetVersion, Job

JOBS_LISTED = 50
# A chart cannot show more points apart than it has pixels; a long run's curve is thinned to
# this many so that the page polled every two seconds stays small.
LOSS_POINTS_SHOWN = 500

SUITE_LABELS = {"eval_split": "Held-out split of the dataset version", "golden_set": "Golden set"}
# (key in the evaluation's scores, label, whether a lower value is better)
EVALUATION_METRICS = [
    ("token_f1", "Token F1", False),
    ("rouge_l", "ROUGE-L", False),
    ("judge", "LLM judge score", False),
    ("eval_loss", "Loss of the reference answers", True),
    ("examples", "Examples", None),
]
# The per-example scores shown next to each answer.
EXAMPLE_SCORES = [("token_f1", "F1"), ("rouge_l", "ROUGE-L"), ("judge", "judge")]
HIT_RATE_CHECKS = {
    "corrections": "Approved corrections find their FAQ entry",
    "golden_set": "Golden-set questions find their source document",
}
# Kinds whose metrics the page lays out in full; the others show their plain figures.
REPORTED_KINDS = (Job.Kind.EVALUATION, Job.Kind.INDEX_REFRESH)
INDEX_STATS = [
    ("documents", "Documents"),
    ("corrections", "Corrections (FAQ entries)"),
    ("chunks", "Chunks"),
    ("embeddings_reused", "Embeddings reused"),
    ("embeddings_computed", "Embeddings computed"),
]


# ---------------------------------------------------------------------------------------------
# Jobs


def jobs_for_project(*, project: Project, kind: str = "", state: str = "") -> list[Job]:
    """The latest JOBS_LISTED jobs, newest first, of one kind and state when given."""
    jobs = Job.objects.filter(project=project).select_related("triggered_by")
    if kind:
        jobs = jobs.filter(kind=kind)
    if state:
        jobs = jobs.filter(state=state)
    return list(jobs.order_by("-created_at", "-pk")[:JOBS_LISTED])


def job_get(*, project: Project, job_id: int) -> Job | None:
    return Job.objects.filter(project=project, pk=job_id).first()


def golden_set_names() -> list[str]:
    """The golden sets a job may name: the files of FLYWHEEL_GOLDEN_SETS_DIR."""
    folder = Path(settings.FLYWHEEL_GOLDEN_SETS_DIR)
    if not folder.is_dir():
        return []
    return sorted(
        path.name for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")
    )


def dataset_versions_to_train_on(*, project: Project) -> list[DatasetVersion]:
    return list(DatasetVersion.objects.filter(project=project).order_by("-number"))


def model_versions_to_evaluate(*, project: Project) -> list[ModelVersion]:
    """Candidates first (what an evaluation is usually for), then the rest, newest first."""
    versions = ModelVersion.objects.filter(project=project).order_by("-created_at", "-pk")
    return sorted(versions, key=lambda version: version.status != ModelVersion.Status.CANDIDATE)


@dataclass(frozen=True)
class MetricComparison:
    label: str
    candidate: float | None
    production: float | None
    # "candidate", "production" or "" (a tie, a count, or a side without the figure)
    better: str


@dataclass(frozen=True)
class ScoredAnswer:
    answer: str
    # (label, score) in EXAMPLE_SCORES order; a score is None where it was not measured.
    scores: list[tuple[str, float | None]]
    judge_reply: str | None


@dataclass(frozen=True)
class ExampleComparison:
    suite_label: str
    question: str
    reference: str
    # The sources of the passages in the prompt; None when retrieval was off.
    sources: list[str] | None
    candidate: ScoredAnswer | None
    production: ScoredAnswer | None
    # Candidate minus production on the gate's metric, where both were scored.
    difference: float | None

    @property
    def sides(self) -> tuple[ScoredAnswer | None, ScoredAnswer | None]:
        """(candidate, production), in the order of the page's columns."""
        return self.candidate, self.production


@dataclass(frozen=True)
class SuiteComparison:
    name: str
    label: str
    metrics: list[MetricComparison]


@dataclass(frozen=True)
class EvaluationReport:
    candidate_name: str
    production_name: str
    index_version: int | None
    # The judge's server, model and rubric; None when no judge graded.
    judge: dict | None
    suites: list[SuiteComparison]
    examples: list[ExampleComparison]
    gate: GateDecision | None


@dataclass(frozen=True)
class HitRates:
    hit_at_1: float | None
    hit_at_k: float | None
    k: int | None
    questions: int | None


@dataclass(frozen=True)
class HitRateComparison:
    label: str
    candidate: HitRates | None
    active: HitRates | None

    @property
    def questions(self) -> int | None:
        measured = self.candidate or self.active
        return measured.questions if measured else None


@dataclass(frozen=True)
class IndexRefreshReport:
    index_version: int | None
    previous_index_version: int | None
    stats: list[tuple[str, int]]
    hit_rates: list[HitRateComparison]


@dataclass(frozen=True)
class JobDetail:
    job: Job
    children: list[Job]
    parameters: list[tuple[str, str]]
    loss_curve: list[dict]
    evaluation: EvaluationReport | None
    index_refresh: IndexRefreshReport | None
    # Plain figures (a training's loss and speed, a snapshot's counts) of the kinds that have
    # no report of their own.
    figures: list[tuple[str, object]]
    metrics_json: str
    pace: "JobPace"


@dataclass(frozen=True)
class JobPace:
    """Beside the progress bar of an unfinished job: the time left and how fast it goes."""

    seconds_left: int | None = None
    steps_per_second: float | None = None
    tokens_per_second: float | None = None

    @property
    def time_left(self) -> str:
        """'about 3 min left', to the nearest unit that reads well."""
        if self.seconds_left is None:
            return ""
        seconds = max(self.seconds_left, 0)
        if seconds < 90:
            return f"about {seconds} s left"
        if seconds < 90 * 60:
            return f"about {round(seconds / 60)} min left"
        return f"about {seconds / 3600:.1f} h left"


def job_pace(job: Job) -> JobPace:
    """A training job measures its own pace per step (retrain.jobs.pace); any other running
    job's time left is its elapsed time stretched to 100 % of its progress."""
    if job.is_finished:
        return JobPace()
    measured = (job.metrics or {}).get("pace") or {}
    seconds_left = measured.get("seconds_left")
    if seconds_left is None and job.started_at and 0 < job.progress < 100:
        elapsed = (timezone.now() - job.started_at).total_seconds()
        seconds_left = round(elapsed * (100 - job.progress) / job.progress)
    return JobPace(
        seconds_left=seconds_left,
        steps_per_second=measured.get("steps_per_second"),
        tokens_per_second=measured.get("tokens_per_second"),
    )


def job_detail_get(*, project: Project, job_id: int) -> JobDetail | None:
    job = (
        Job.objects.filter(project=project, pk=job_id)
        .select_related(
            "triggered_by", "parent", "dataset_version", "model_version", "index_version"
        )
        .first()
    )
    if job is None:
        return None
    metrics = job.metrics or {}
    return JobDetail(
        job=job,
        children=list(job.children.order_by("created_at", "pk")),
        parameters=[(name, json.dumps(value)) for name, value in job.parameters.items()],
        loss_curve=loss_curve_thinned(metrics.get("loss_curve") or []),
        evaluation=_evaluation_report(metrics) if job.kind == Job.Kind.EVALUATION else None,
        index_refresh=(
            _index_refresh_report(metrics) if job.kind == Job.Kind.INDEX_REFRESH else None
        ),
        figures=[] if job.kind in REPORTED_KINDS else _figures(metrics),
        metrics_json=json.dumps(metrics, indent=2, sort_keys=True),
        pace=job_pace(job),
    )


def _figures(metrics: dict) -> list[tuple[str, object]]:
    return [(name, value) for name, value in metrics.items() if not isinstance(value, dict | list)]


def loss_curve_thinned(points: list[dict]) -> list[dict]:
    """At most LOSS_POINTS_SHOWN evenly spaced points, always ending with the latest step."""
    if len(points) <= LOSS_POINTS_SHOWN:
        return points
    stride = math.ceil(len(points) / LOSS_POINTS_SHOWN)
    thinned = points[::stride]
    return thinned if thinned[-1] is points[-1] else [*thinned, points[-1]]


def _better_side(candidate, production, lower_is_better: bool | None) -> str:
    if lower_is_better is None or candidate is None or production is None:
        return ""
    if candidate == production:
        return ""
    candidate_wins = candidate < production if lower_is_better else candidate > production
    return "candidate" if candidate_wins else "production"


def _scored_answer(side: dict | None) -> ScoredAnswer | None:
    if not side:
        return None
    return ScoredAnswer(
        answer=side.get("answer", ""),
        scores=[(label, side.get(key)) for key, label in EXAMPLE_SCORES],
        judge_reply=side.get("judge_reply"),
    )


def _example_comparisons(examples: list[dict], metric: str | None) -> list[ExampleComparison]:
    """Each question with both answers and their scores, in the order they were asked."""
    comparisons = []
    for example in examples:
        candidate, production = example.get("candidate") or {}, example.get("production") or {}
        candidate_score, production_score = candidate.get(metric), production.get(metric)
        comparisons.append(
            ExampleComparison(
                suite_label=SUITE_LABELS.get(example.get("suite", ""), example.get("suite", "")),
                question=example.get("question", ""),
                reference=example.get("reference", ""),
                sources=example.get("sources"),
                candidate=_scored_answer(candidate),
                production=_scored_answer(production),
                difference=(
                    candidate_score - production_score
                    if candidate_score is not None and production_score is not None
                    else None
                ),
            )
        )
    return comparisons


def _evaluation_report(metrics: dict) -> EvaluationReport | None:
    if not metrics.get("suites") and not metrics.get("gate"):
        return None
    gate = gate_decision_from(metrics.get("gate"))
    suites = []
    for name, sides in (metrics.get("suites") or {}).items():
        candidate, production = sides.get("candidate") or {}, sides.get("production") or {}
        suites.append(
            SuiteComparison(
                name=name,
                label=SUITE_LABELS.get(name, name),
                metrics=[
                    MetricComparison(
                        label=label,
                        candidate=candidate.get(key),
                        production=production.get(key),
                        better=_better_side(candidate.get(key), production.get(key), lower),
                    )
                    for key, label, lower in EVALUATION_METRICS
                ],
            )
        )
    return EvaluationReport(
        candidate_name=metrics.get("candidate", ""),
        production_name=metrics.get("production", ""),
        index_version=metrics.get("index_version"),
        judge=metrics.get("judge"),
        suites=suites,
        examples=_example_comparisons(metrics.get("examples") or [], gate.metric if gate else None),
        gate=gate,
    )


def gate_decision_from(gate: dict | None) -> GateDecision | None:
    return GateDecision.from_dict(gate) if gate else None


def _hit_rates(rates: dict | None) -> HitRates | None:
    if not rates:
        return None
    return HitRates(
        hit_at_1=rates.get("hit@1"),
        hit_at_k=rates.get("hit@k"),
        k=rates.get("k"),
        questions=rates.get("questions"),
    )


def _index_refresh_report(metrics: dict) -> IndexRefreshReport | None:
    if "index_version" not in metrics:
        return None
    stats = metrics.get("stats") or {}
    return IndexRefreshReport(
        index_version=metrics.get("index_version"),
        previous_index_version=metrics.get("previous_index_version"),
        stats=[(label, stats[key]) for key, label in INDEX_STATS if key in stats],
        hit_rates=[
            HitRateComparison(
                label=label,
                candidate=_hit_rates((metrics.get(check) or {}).get("candidate")),
                active=_hit_rates((metrics.get(check) or {}).get("active")),
            )
            for check, label in HIT_RATE_CHECKS.items()
        ],
    )


# ---------------------------------------------------------------------------------------------
# Model and index versions
