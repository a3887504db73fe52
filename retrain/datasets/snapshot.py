"""Freeze the current examples of a project into an immutable, content-hashed DatasetVersion,
with counts, stats, the policy used and a diff against the previous version."""

import hashlib
import statistics
from collections import Counter
from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import Count, Func, Max, TextField
from django.db.models.fields.json import KT
from django.db.models.functions import Length
from django.forms.models import model_to_dict

from feedback.models import Rating
from flywheel.models import Project
from retrain.curation.pipeline import project_curation_lock
from retrain.curation.policy import curation_policy_get
from retrain.models import DatasetRecord, DatasetVersion, InstructionExample

Kind = DatasetRecord.Kind
RECORD_BATCH_SIZE = 2000
DIFF_SAMPLE_SIZE = 20
POLICY_FIELDS_EXCLUDED = {"id", "project", "created_at", "updated_at"}


def _sha256(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class _LastUserTurn(Func):
    """The last user message of a chat-format `messages` array: the question."""

    template = (
        "(jsonb_path_query_array(%(expressions)s, '$[*] ? (@.role == \"user\").content') ->> -1)"
    )
    output_field = TextField()


class RecordDraft(NamedTuple):
    """A record of the snapshot being taken, without its prompt: enough for the version's
    content hash, counts, stats and diff. The prompt (system prompt and served context
    included, the bulk of a record) stays in PostgreSQL, which copies it from the example when
    the record is written."""

    example_id: int
    kind: str
    split: str
    chosen: str
    rejected: str
    signal: str
    content_hash: str
    question_chars: int = 0  # this and the source: SFT records only
    source: str = ""


def dataset_record_drafts(*, project: Project) -> list[RecordDraft]:
    """The records a snapshot taken now would hold, in the order they are written.

    Preference pairs come from two places: a correction against the answer it replaced, and a
    cluster's chosen example against a thumbs-down answer to a question of the same cluster.
    """
    examples = InstructionExample.objects.filter(project=project).order_by("pk")
    included = examples.filter(status=InstructionExample.Status.INCLUDED).values_list(
        "pk",
        "split",
        "signal",
        "content_hash",
        "rejected_answer",
        "cluster",
        KT("messages__-1__content"),
        Length(_LastUserTurn("messages")),
        "interaction__source",
    )
    negatives_by_cluster: dict[int, list[str]] = {}
    for cluster, answer in examples.filter(
        status=InstructionExample.Status.EXCLUDED, signal=InstructionExample.Signal.NEGATIVE
    ).values_list("cluster", KT("messages__-1__content")):
        negatives_by_cluster.setdefault(cluster, []).append(answer)

    sft, preference = [], []
    for (
        example_id,
        split,
        signal,
        content_hash,
        rejected_answer,
        cluster,
        chosen,
        question_chars,
        source,
    ) in included.iterator(chunk_size=RECORD_BATCH_SIZE):
        sft.append(
            RecordDraft(
                example_id=example_id,
                kind=Kind.SFT,
                split=split,
                chosen=chosen,
                rejected="",
                signal=signal,
                content_hash=content_hash,
                question_chars=question_chars or 0,
                source=source,
            )
        )
        rejected_answers = []
        if rejected_answer and rejected_answer != chosen:
            rejected_answers.append((rejected_answer, "correction_vs_answer"))
        rejected_answers += [
            (answer, "preferred_vs_thumbs_down")
            for answer in negatives_by_cluster.get(cluster, [])
            if answer != chosen
        ]
        seen = set()
        for rejected, pair_signal in rejected_answers:
            if rejected not in seen:
                seen.add(rejected)
                preference.append(
                    RecordDraft(
                        example_id=example_id,
                        kind=Kind.PREFERENCE,
                        split=split,
                        chosen=chosen,
                        rejected=rejected,
                        signal=pair_signal,
                        content_hash=_sha256(content_hash, chosen, rejected),
                    )
                )
    return sft + preference


def _records_write(*, version: DatasetVersion, drafts: list[RecordDraft]) -> None:
    """Insert the records, RECORD_BATCH_SIZE at a time and in their order (exports follow the
    ids). Each record's prompt is its example's messages without the last, the answer:
    PostgreSQL copies it from the example, so the prompts never travel to Python and back."""
    columns = ["example_id", "kind", "split", "chosen", "rejected", "signal", "content_hash"]
    with connection.cursor() as cursor:
        for start in range(0, len(drafts), RECORD_BATCH_SIZE):
            batch = drafts[start : start + RECORD_BATCH_SIZE]
            cursor.execute(
                f"INSERT INTO {DatasetRecord._meta.db_table} "
                f"(dataset_version_id, prompt, {', '.join(columns)}) "
                f"SELECT %s, example.messages - -1, {', '.join(f'draft.{c}' for c in columns)} "
                "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], "
                "%s::text[], %s::text[]) WITH ORDINALITY "
                f"AS draft({', '.join(columns)}, position) "
                f"JOIN {InstructionExample._meta.db_table} AS example "
                "ON example.id = draft.example_id "
                "ORDER BY draft.position",
                [version.pk, *([getattr(draft, column) for draft in batch] for column in columns)],
            )


def _content_hash(drafts: list[RecordDraft]) -> str:
    keys = sorted(f"{r.kind}:{r.split}:{r.content_hash}" for r in drafts)
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


def _stats(*, project: Project, drafts: list[RecordDraft]) -> dict:
    sft = [r for r in drafts if r.kind == Kind.SFT]
    ratings = Rating.objects.filter(
        interaction__instruction_example__project=project,
        interaction__instruction_example__status=InstructionExample.Status.INCLUDED,
    )
    return {
        "question_chars": _length_stats([r.question_chars for r in sft]),
        "answer_chars": _length_stats([len(r.chosen) for r in sft]),
        "signals": dict(Counter(r.signal for r in drafts)),
        "sources": dict(Counter(r.source for r in sft)),
        "ratings": {
            "thumbs": dict(
                ratings.exclude(thumb="").values_list("thumb").annotate(Count("pk")).order_by()
            ),
            "scores": dict(
                ratings.exclude(score=None)
                .values_list("score")
                .annotate(Count("pk"))
                .order_by("score")
            ),
        },
    }


def _counts(drafts: list[RecordDraft]) -> dict:
    counts = Counter(f"{r.kind}_{r.split}" for r in drafts)
    return {
        "train": counts["sft_train"],
        "eval": counts["sft_eval"],
        "preference_train": counts["preference_train"],
        "preference_eval": counts["preference_eval"],
    }


def _diff(drafts: list[RecordDraft], previous: DatasetVersion | None) -> dict:
    current = {r.content_hash: r for r in drafts if r.kind == Kind.SFT}
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
        project_curation_lock(
            project.pk
        )  # curation waits, so the snapshot sees one consistent state
        drafts = dataset_record_drafts(project=project)
        content_hash = _content_hash(drafts)
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
            counts=_counts(drafts),
            stats=_stats(project=project, drafts=drafts),
            diff=_diff(drafts, previous),
            previous=previous,
            trigger=trigger,
            created_by=created_by,
        )
        _records_write(version=version, drafts=drafts)
    return version, True
