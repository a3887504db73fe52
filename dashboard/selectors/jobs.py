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
    ("eval_loss", "Eval loss", True),
    ("token_f1", "Token F1", False),
    ("rouge_l", "ROUGE-L", False),
    ("examples", "Examples", None),
]
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
class SampleComparison:
    question: str
    reference: str
    candidate: str
    production: str | None


@dataclass(frozen=True)
class SuiteComparison:
    name: str
    label: str
    metrics: list[MetricComparison]
    samples: list[SampleComparison]


@dataclass(frozen=True)
class EvaluationReport:
    candidate_name: str
    production_name: str
    suites: list[SuiteComparison]
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


def _sample_comparisons(candidate: dict, production: dict) -> list[SampleComparison]:
    """The candidate's sample answers next to production's answer to the same question."""
    production_answers = {
        sample.get("question"): sample.get("prediction", "")
        for sample in production.get("samples") or []
    }
    return [
        SampleComparison(
            question=sample.get("question", ""),
            reference=sample.get("reference", ""),
            candidate=sample.get("prediction", ""),
            production=production_answers.get(sample.get("question")),
        )
        for sample in candidate.get("samples") or []
    ]


def _evaluation_report(metrics: dict) -> EvaluationReport | None:
    if not metrics.get("suites") and not metrics.get("gate"):
        return None
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
                samples=_sample_comparisons(candidate, production),
            )
        )
    return EvaluationReport(
        candidate_name=metrics.get("candidate", ""),
        production_name=metrics.get("production", ""),
        suites=suites,
        gate=gate_decision_from(metrics.get("gate")),
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
