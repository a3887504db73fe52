"""Freeze the current examples of a project into an immutable, content-hashed DatasetVersion,
and export versions as chat JSONL, Alpaca JSONL and DPO preference JSONL."""

import hashlib
import json
import statistics
from collections import Counter
from collections.abc import Iterator

from django.db import transaction
from django.db.models import Max
from django.forms.models import model_to_dict

from feedback.models import Rating
from flywheel.models import Project
from retrain.models import DatasetRecord, DatasetVersion, InstructionExample
from retrain.services.curation import _lock_project, curation_policy_get

Kind = DatasetRecord.Kind
RECORD_BATCH_SIZE = 2000
DIFF_SAMPLE_SIZE = 20
POLICY_FIELDS_EXCLUDED = {"id", "project", "created_at", "updated_at"}


def _sha256(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _sft_record(example: InstructionExample) -> DatasetRecord:
    return DatasetRecord(
        example=example,
        kind=Kind.SFT,
        split=example.split,
        prompt=example.messages[:-1],
        chosen=example.messages[-1]["content"],
        signal=example.signal,
        content_hash=example.content_hash,
    )


def _preference_record(example: InstructionExample, rejected: str, signal: str) -> DatasetRecord:
    chosen = example.messages[-1]["content"]
    return DatasetRecord(
        example=example,
        kind=Kind.PREFERENCE,
        split=example.split,
        prompt=example.messages[:-1],
        chosen=chosen,
        rejected=rejected,
        signal=signal,
        content_hash=_sha256(example.content_hash, chosen, rejected),
    )


def dataset_records_current(*, project: Project) -> list[DatasetRecord]:
    """The records a snapshot taken now would hold (unsaved).

    Preference pairs come from two places: a correction against the answer it replaced, and a
    cluster's chosen example against a thumbs-down answer to a question of the same cluster.
    """
    examples = InstructionExample.objects.filter(project=project).order_by("pk")
    included = list(
        examples.filter(status=InstructionExample.Status.INCLUDED).select_related("interaction")
    )
    negatives_by_cluster: dict[int, list[str]] = {}
    for cluster, messages in examples.filter(
        status=InstructionExample.Status.EXCLUDED, signal=InstructionExample.Signal.NEGATIVE
    ).values_list("cluster", "messages"):
        negatives_by_cluster.setdefault(cluster, []).append(messages[-1]["content"])

    records = [_sft_record(example) for example in included]
    for example in included:
        chosen = example.messages[-1]["content"]
        rejected_answers = []
        if example.rejected_answer and example.rejected_answer != chosen:
            rejected_answers.append((example.rejected_answer, "correction_vs_answer"))
        rejected_answers += [
            (answer, "preferred_vs_thumbs_down")
            for answer in negatives_by_cluster.get(example.cluster, [])
            if answer != chosen
        ]
        seen = set()
        for rejected, signal in rejected_answers:
            if rejected not in seen:
                seen.add(rejected)
                records.append(_preference_record(example, rejected, signal))
    return records


def _content_hash(records: list[DatasetRecord]) -> str:
    keys = sorted(f"{r.kind}:{r.split}:{r.content_hash}" for r in records)
    return _sha256(*keys) if keys else _sha256("empty")


def _length_stats(values: list[int]) -> dict:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "mean": round(statistics.fmean(values), 1),
        "median": statistics.median(values),
        "max": max(values),
        "min": min(values),
    }


def _stats(*, project: Project, records: list[DatasetRecord]) -> dict:
    sft = [r for r in records if r.kind == Kind.SFT]
    ratings = Rating.objects.filter(
        interaction__instruction_example__project=project,
        interaction__instruction_example__status=InstructionExample.Status.INCLUDED,
    )
    questions = [
        next((m["content"] for m in reversed(r.prompt) if m["role"] == "user"), "") for r in sft
    ]
    return {
        "question_chars": _length_stats([len(question) for question in questions]),
        "answer_chars": _length_stats([len(r.chosen) for r in sft]),
        "signals": dict(Counter(r.signal for r in records)),
        "sources": dict(Counter(r.example.interaction.source for r in sft)),
        "ratings": {
            "thumbs": dict(Counter(ratings.exclude(thumb="").values_list("thumb", flat=True))),
            "scores": dict(
                sorted(Counter(ratings.exclude(score=None).values_list("score", flat=True)).items())
            ),
        },
    }


def _counts(records: list[DatasetRecord]) -> dict:
    counts = Counter(f"{r.kind}_{r.split}" for r in records)
    return {
        "train": counts["sft_train"],
        "eval": counts["sft_eval"],
        "preference_train": counts["preference_train"],
        "preference_eval": counts["preference_eval"],
    }


def _diff(records: list[DatasetRecord], previous: DatasetVersion | None) -> dict:
    current = {r.content_hash: r for r in records if r.kind == Kind.SFT}
    before = (
        dict(previous.records.filter(kind=Kind.SFT).values_list("content_hash", "example_id"))
        if previous
        else {}
    )
    added = [h for h in current if h not in before]
    removed = [h for h in before if h not in current]
    return {
        "previous_version": previous.number if previous else None,
        "added": len(added),
        "removed": len(removed),
        "unchanged": len(current) - len(added),
        "added_examples": [current[h].example_id for h in added[:DIFF_SAMPLE_SIZE]],
        "removed_examples": [before[h] for h in removed[:DIFF_SAMPLE_SIZE]],
    }


def dataset_snapshot(
    *, project: Project, trigger: str, created_by=None
) -> tuple[DatasetVersion, bool]:
    """Freeze the project's current examples; (version, created). With nothing changed since
    a version with the same content, that version is returned and nothing is written."""
    policy = curation_policy_get(project=project)
    with transaction.atomic():
        _lock_project(project.pk)  # curation waits, so the snapshot sees one consistent state
        records = dataset_records_current(project=project)
        content_hash = _content_hash(records)
        existing = DatasetVersion.objects.filter(project=project, content_hash=content_hash)
        if existing.exists():
            return existing.get(), False
        previous = DatasetVersion.objects.filter(project=project).order_by("-number").first()
        number = (
            DatasetVersion.objects.filter(project=project).aggregate(Max("number"))["number__max"]
            or 0
        ) + 1
        version = DatasetVersion.objects.create(
            project=project,
            number=number,
            content_hash=content_hash,
            policy={
                key: value
                for key, value in model_to_dict(policy).items()
                if key not in POLICY_FIELDS_EXCLUDED
            },
            counts=_counts(records),
            stats=_stats(project=project, records=records),
            diff=_diff(records, previous),
            previous=previous,
            trigger=trigger,
            created_by=created_by,
        )
        for record in records:
            record.dataset_version = version
        DatasetRecord.objects.bulk_create(records, batch_size=RECORD_BATCH_SIZE)
    return version, True


EXPORT_FORMATS = ("chat", "alpaca", "dpo")
SPLITS = ("train", "eval", "all")


def _alpaca_row(record: DatasetRecord) -> dict:
    """instruction: the last question; input: the context served and any earlier turns."""
    *earlier, last = [m for m in record.prompt if m["role"] != "system"]
    system = next((m["content"] for m in record.prompt if m["role"] == "system"), "")
    context = system.split("Context:\n", 1)[1] if "Context:\n" in system else ""
    conversation = "\n".join(f"{m['role']}: {m['content']}" for m in earlier)
    return {
        "instruction": last["content"],
        "input": "\n\n".join(part for part in (context, conversation) if part),
        "output": record.chosen,
    }


def dataset_export_lines(
    *, version: DatasetVersion, export_format: str, split: str
) -> Iterator[str]:
    """JSON lines: `chat` and `alpaca` for supervised fine-tuning, `dpo` for preference
    training (TRL's conversational format: prompt messages, chosen and rejected turns)."""
    if export_format not in EXPORT_FORMATS or split not in SPLITS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS} and split one of {SPLITS}")
    kind = Kind.PREFERENCE if export_format == "dpo" else Kind.SFT
    records = version.records.filter(kind=kind).order_by("pk")
    if split != "all":
        records = records.filter(split=split)
    for record in records.iterator(chunk_size=RECORD_BATCH_SIZE):
        if export_format == "chat":
            row = {"messages": [*record.prompt, {"role": "assistant", "content": record.chosen}]}
        elif export_format == "alpaca":
            row = _alpaca_row(record)
        else:
            row = {
                "prompt": record.prompt,
                "chosen": [{"role": "assistant", "content": record.chosen}],
                "rejected": [{"role": "assistant", "content": record.rejected}],
            }
        yield json.dumps(row, ensure_ascii=False) + "\n"
