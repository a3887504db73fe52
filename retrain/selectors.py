"""Reads of the retrain app."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet

from feedback.models import Rating, Review
from flywheel.messages import last_user_message
from flywheel.models import Interaction, Project
from retrain.models import DatasetRecord, DatasetVersion, InstructionExample


def interaction_ids_with_feedback(*, project: Project) -> list:
    """Every interaction of the project that has a rating or a review, oldest first."""
    return list(
        Interaction.objects.filter(project=project)
        .filter(
            Exists(Rating.objects.filter(interaction=OuterRef("pk")))
            | Exists(Review.objects.filter(interaction=OuterRef("pk")))
        )
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)
    )


# ---------------------------------------------------------------------------------------------
# Dashboard: dataset versions, what curation holds now, and re-curation


def _has_feedback() -> Q:
    return Exists(Rating.objects.filter(interaction=OuterRef("pk"))) | Exists(
        Review.objects.filter(interaction=OuterRef("pk"))
    )


def interactions_with_feedback_count(*, project: Project) -> int:
    return Interaction.objects.filter(project=project).filter(_has_feedback()).count()


def interaction_ids_least_recently_curated(*, project: Project, limit: int | None = None) -> list:
    """Interactions with feedback, the never curated first, then those curated longest ago
    (all of them, or the first `limit`)."""
    return list(
        Interaction.objects.filter(project=project)
        .filter(_has_feedback())
        .order_by(F("instruction_example__curated_at").asc(nulls_first=True), "created_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )


def examples_curated_before_count(*, project: Project, moment: datetime) -> int:
    """Examples last curated before `moment`, such as the policy's last change."""
    return InstructionExample.objects.filter(project=project, curated_at__lt=moment).count()


def dataset_versions_for_project(*, project: Project) -> QuerySet[DatasetVersion]:
    return (
        DatasetVersion.objects.filter(project=project)
        .select_related("created_by")
        .order_by("-number")
    )


def dataset_version_get(*, project: Project, number: int) -> DatasetVersion | None:
    return (
        DatasetVersion.objects.filter(project=project, number=number)
        .select_related("created_by", "previous")
        .first()
    )


@dataclass(frozen=True)
class SignalTally:
    """How many of a project's examples with one signal (or all) stand in each status."""

    label: str
    included: int = 0
    duplicate: int = 0
    excluded: int = 0

    @property
    def total(self) -> int:
        return self.included + self.duplicate + self.excluded


@dataclass(frozen=True)
class CurationWorkingState:
    """The examples as curation left them: what a snapshot taken now would start from."""

    by_signal: list[SignalTally]
    totals: SignalTally
    curated_since_latest_version: int | None  # None when there is no version yet


def curation_working_state(*, project: Project) -> CurationWorkingState:
    examples = InstructionExample.objects.filter(project=project)
    counts: dict[str, dict[str, int]] = {}
    for row in examples.values("signal", "status").annotate(count=Count("pk")).order_by():
        counts.setdefault(row["signal"], {})[row["status"]] = row["count"]
    by_signal = [
        SignalTally(label=label, **counts[signal])
        for signal, label in InstructionExample.Signal.choices
        if signal in counts
    ]
    totals = {
        status: sum(by_status.get(status, 0) for by_status in counts.values())
        for status in InstructionExample.Status.values
    }
    latest = DatasetVersion.objects.filter(project=project).order_by("-number").first()
    return CurationWorkingState(
        by_signal=by_signal,
        totals=SignalTally(label="All signals", **totals),
        curated_since_latest_version=(
            examples.filter(curated_at__gt=latest.created_at).count() if latest else None
        ),
    )


# Signals of preference pairs (retrain.datasets.snapshot) next to those of examples.
RECORD_SIGNAL_LABELS = {
    **dict(InstructionExample.Signal.choices),
    "correction_vs_answer": "Correction against the answer it replaced",
    "preferred_vs_thumbs_down": "Cluster's best answer against a thumbs-down one",
}
SAMPLE_RECORDS_PER_SPLIT = 10
SAMPLE_PREFERENCE_PAIRS = 5


@dataclass(frozen=True)
class RecordSample:
    """A frozen record as a person reads it: the question it answers rather than the prompt."""

    question: str
    chosen: str
    rejected: str
    signal: str
    interaction_id: uuid.UUID | None  # None once the example behind it is gone

    @property
    def signal_label(self) -> str:
        return RECORD_SIGNAL_LABELS.get(self.signal, self.signal)


def _record_samples(records: QuerySet[DatasetRecord]) -> list[RecordSample]:
    return [
        RecordSample(
            question=last_user_message(row["prompt"]),
            chosen=row["chosen"],
            rejected=row["rejected"],
            signal=row["signal"],
            interaction_id=row["example__interaction_id"],
        )
        for row in records.values(
            "prompt", "chosen", "rejected", "signal", "example__interaction_id"
        )
    ]


@dataclass(frozen=True)
class DatasetSamples:
    train: list[RecordSample]
    eval: list[RecordSample]
    preference: list[RecordSample]


def dataset_samples(*, version: DatasetVersion) -> DatasetSamples:
    """The first records of each split, and the first preference pairs."""
    records = version.records.order_by("pk")
    sft = records.filter(kind=DatasetRecord.Kind.SFT)
    return DatasetSamples(
        train=_record_samples(
            sft.filter(split=InstructionExample.Split.TRAIN)[:SAMPLE_RECORDS_PER_SPLIT]
        ),
        eval=_record_samples(
            sft.filter(split=InstructionExample.Split.EVAL)[:SAMPLE_RECORDS_PER_SPLIT]
        ),
        preference=_record_samples(
            records.filter(kind=DatasetRecord.Kind.PREFERENCE)[:SAMPLE_PREFERENCE_PAIRS]
        ),
    )


DIFF_EXAMPLES_SHOWN = 20


@dataclass(frozen=True)
class DiffExample:
    question: str
    interaction_id: uuid.UUID | None  # None once the example behind it is gone


@dataclass(frozen=True)
class DatasetDiffExamples:
    added: list[DiffExample]
    removed: list[DiffExample]


def _records_missing_from(
    records: QuerySet[DatasetRecord], other: QuerySet[DatasetRecord]
) -> list[DiffExample]:
    absent_from_other = ~Exists(other.filter(content_hash=OuterRef("content_hash")))
    missing = records.filter(absent_from_other).order_by("pk")[:DIFF_EXAMPLES_SHOWN]
    return [
        DiffExample(question=last_user_message(prompt), interaction_id=interaction_id)
        for prompt, interaction_id in missing.values_list("prompt", "example__interaction_id")
    ]


def dataset_diff_examples(*, version: DatasetVersion) -> DatasetDiffExamples:
    """The first instruction examples the version added and removed against the previous
    one. Read from the frozen records, compared by content hash as the snapshot's diff was,
    so an example deleted since still shows its question."""
    sft = DatasetRecord.objects.filter(kind=DatasetRecord.Kind.SFT)
    current = sft.filter(dataset_version=version)
    previous = sft.filter(dataset_version_id=version.previous_id)
    return DatasetDiffExamples(
        added=_records_missing_from(current, previous),
        removed=_records_missing_from(previous, current),
    )
