"""The model and index versions page: lineage, gate decisions, the corrections each index
version holds."""

from dataclasses import dataclass

from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Left

from dashboard.selectors.jobs import gate_decision_from
from feedback.models import Review
from flywheel.models import Chunk, IndexVersion, ModelVersion, Project
from retrain.evaluation.gate import GateDecision
from retrain.models import DatasetVersion, Job

VERSIONS_LISTED = 50


CORRECTIONS_LISTED = 50


QUESTION_EXCERPT_CHARS = 120


@dataclass(frozen=True)
class ModelVersionRow:
    version: ModelVersion
    gate: GateDecision | None
    # The latest evaluation job of this version, where its gate decision came from.
    evaluation_job_id: int | None


def model_versions_for_project(*, project: Project) -> list[ModelVersionRow]:
    """The latest VERSIONS_LISTED model versions, newest first, with their lineage."""
    latest_evaluation = Job.objects.filter(
        kind=Job.Kind.EVALUATION, model_version=OuterRef("pk")
    ).order_by("-created_at", "-pk")
    dataset_number = DatasetVersion.objects.filter(pk=OuterRef("dataset_version_id"))
    versions = (
        ModelVersion.objects.filter(project=project)
        .select_related("parent")
        .annotate(dataset_version_number=Subquery(dataset_number.values("number")[:1]))
        .annotate(evaluation_job_id=Subquery(latest_evaluation.values("pk")[:1]))
        .order_by("-created_at", "-pk")[:VERSIONS_LISTED]
    )
    return [
        ModelVersionRow(
            version=version,
            gate=gate_decision_from((version.metrics.get("evaluation") or {}).get("gate")),
            evaluation_job_id=version.evaluation_job_id,
        )
        for version in versions
    ]


def model_version_get(*, project: Project, version_id: int) -> ModelVersion | None:
    return ModelVersion.objects.filter(project=project, pk=version_id).first()


@dataclass(frozen=True)
class CorrectionLink:
    interaction_id: object
    question: str


@dataclass(frozen=True)
class IndexVersionRow:
    version: IndexVersion
    documents: int
    chunks: int
    correction_count: int
    # The first CORRECTIONS_LISTED corrections whose review still exists.
    corrections: list[CorrectionLink]
    embeddings_reused: int | None
    embeddings_computed: int | None


def index_versions_for_project(*, project: Project) -> list[IndexVersionRow]:
    """The latest VERSIONS_LISTED index versions, newest first. Documents, chunks and
    corrections are counted from the chunks themselves: the first version grows as documents
    are added, so its stats say nothing."""
    versions = list(
        IndexVersion.objects.filter(project=project)
        .annotate(
            chunk_count=Count("chunks"),
            document_count=Count("chunks__document", distinct=True),
            faq_count=Count("chunks", filter=Q(chunks__kind=Chunk.Kind.FAQ)),
        )
        .order_by("-number")[:VERSIONS_LISTED]
    )
    corrections = _corrections_by_version([version.pk for version in versions])
    return [
        IndexVersionRow(
            version=version,
            documents=version.document_count,
            chunks=version.chunk_count,
            correction_count=version.faq_count,
            corrections=corrections.get(version.pk, []),
            embeddings_reused=version.stats.get("embeddings_reused"),
            embeddings_computed=version.stats.get("embeddings_computed"),
        )
        for version in versions
    ]


def _corrections_by_version(version_ids: list[int]) -> dict[int, list[CorrectionLink]]:
    rows = (
        Chunk.objects.filter(index_version__in=version_ids, kind=Chunk.Kind.FAQ)
        .exclude(review_id=None)
        .order_by("index_version", "position")
        .values_list("index_version", "review_id")
    )
    reviews = Review.objects.filter(pk__in={review_id for _, review_id in rows}).annotate(
        question=Left("interaction__query_text", QUESTION_EXCERPT_CHARS)
    )
    questions = {review.pk: (review.interaction_id, review.question) for review in reviews}
    corrections: dict[int, list[CorrectionLink]] = {}
    for version_id, review_id in rows:
        listed = corrections.setdefault(version_id, [])
        if review_id not in questions:
            continue
        interaction_id, question = questions[review_id]
        if len(listed) < CORRECTIONS_LISTED:
            listed.append(CorrectionLink(interaction_id=interaction_id, question=question))
    return corrections


def index_version_get(*, project: Project, version_id: int) -> IndexVersion | None:
    return IndexVersion.objects.filter(project=project, pk=version_id).first()
