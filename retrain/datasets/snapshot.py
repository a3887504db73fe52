"""Freeze the current examples of a project into an immutable, content-hashed DatasetVersion,
with counts, stats, the policy used and a diff against the previous version."""

import hashlib
import json
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
from retrain.curation.pairwise import pairwise_preferences_build
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
    the record is written. A pair judged side by side may have no example: it carries its
    prompt (`prompt_json`)."""

    example_id: int | None
    kind: str
    split: str
    chosen: str
    rejected: str
    signal: str
    content_hash: str
    source: str
    question_chars: int = 0  # SFT records only
    prompt_json: str | None = None  # pairwise judgements only


class SnapshotDrafts(NamedTuple):
    records: list[RecordDraft]
    # Summed over the included examples: how many findings of each PII kind were scrubbed.
    pii_scrubbed: dict[str, int]
    # Preference pairs left out because chosen and rejected are the same text once scrubbed.
    identical_pairs_dropped: int


def dataset_record_drafts(*, project: Project) -> SnapshotDrafts:
    """The records a snapshot taken now would hold, in the order they are written.

    Preference pairs come from three places: a correction against the answer it replaced, a
    cluster's chosen example against a thumbs-down answer to a question of the same cluster,
    and reviewers' side-by-side judgements of a served answer and a candidate's shadow answer.
    Both sides are stored scrubbed, so a pair whose answers differ only in the PII scrubbing
    replaced (two e-mail addresses) teaches nothing and is dropped.
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
        "pii_scrubbed",
    )
    negatives_by_cluster: dict[int, list[str]] = {}
    for cluster, answer in examples.filter(
        status=InstructionExample.Status.EXCLUDED, signal=InstructionExample.Signal.NEGATIVE
    ).values_list("cluster", KT("messages__-1__content")):
        negatives_by_cluster.setdefault(cluster, []).append(answer)

    sft, preference = [], []
    pii_scrubbed: Counter[str] = Counter()
    identical_pairs_dropped = 0
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
        example_pii_scrubbed,
    ) in included.iterator(chunk_size=RECORD_BATCH_SIZE):
        pii_scrubbed.update(example_pii_scrubbed)
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
        if rejected_answer:
            rejected_answers.append((rejected_answer, "correction_vs_answer"))
        rejected_answers += [
            (answer, "preferred_vs_thumbs_down") for answer in negatives_by_cluster.get(cluster, [])
        ]
        seen = set()
        for rejected, pair_signal in rejected_answers:
            if rejected == chosen:
                identical_pairs_dropped += 1
            elif rejected not in seen:
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
                        source=source,
                    )
                )
    preference += [
        RecordDraft(
            example_id=None,
            kind=Kind.PREFERENCE,
            split=pair.split,
            chosen=pair.chosen,
            rejected=pair.rejected,
            signal=pair.signal,
            content_hash=pair.content_hash,
            source=pair.source,
            prompt_json=json.dumps(pair.prompt),
        )
        for pair in pairwise_preferences_build(project=project)
    ]
    return SnapshotDrafts(
        records=sft + preference,
        pii_scrubbed=dict(sorted(pii_scrubbed.items())),
        identical_pairs_dropped=identical_pairs_dropped,
    )


def _records_write(*, version: DatasetVersion, drafts: list[RecordDraft]) -> None:
    """Insert the records, RECORD_BATCH_SIZE at a time and in their order (exports follow the
    ids). Each record's prompt is its example's messages without the last, the answer:
    PostgreSQL copies it from the example, so the prompts never travel to Python and back
    (a judged pair without an example brings its own)."""
    columns = [
        "example_id",
        "kind",
        "split",
        "chosen",
        "rejected",
        "signal",
        "content_hash",
        "source",
    ]
    with connection.cursor() as cursor:
        for start in range(0, len(drafts), RECORD_BATCH_SIZE):
            batch = drafts[start : start + RECORD_BATCH_SIZE]
            cursor.execute(
                f"INSERT INTO {DatasetRecord._meta.db_table} "
                f"(dataset_version_id, prompt, {', '.join(columns)}) "
                "SELECT %s, COALESCE(draft.prompt_json::jsonb, example.messages - -1), "
                f"{', '.join(f'draft.{c}' for c in columns)} "
                "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], "
                "%s::text[], %s::text[], %s::text[], %s::text[]) WITH ORDINALITY "
                f"AS draft({', '.join(columns)}, prompt_json, position) "
                f"LEFT JOIN {InstructionExample._meta.db_table} AS example "
                "ON example.id = draft.example_id "
                "ORDER BY draft.position",
                [
                    version.pk,
                    *([getattr(draft, column) for draft in batch] for column in columns),
                    [draft.prompt_json for draft in batch],
                ],
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


def _stats(*, project: Project, drafts: SnapshotDrafts) -> dict:
    sft = [r for r in drafts.records if r.kind == Kind.SFT]
    ratings = Rating.objects.filter(
        interaction__instruction_example__project=project,
        interaction__instruction_example__status=InstructionExample.Status.INCLUDED,
    )
    return {
        "question_chars": _length_stats([r.question_chars for r in sft]),
        "answer_chars": _length_stats([len(r.chosen) for r in sft]),
        "signals": dict(Counter(r.signal for r in drafts.records)),
        "sources": dict(Counter(r.source for r in sft)),
        "pii_scrubbed": drafts.pii_scrubbed,
        "identical_pairs_dropped": drafts.identical_pairs_dropped,
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
        content_hash = _content_hash(drafts.records)
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
            counts=_counts(drafts.records),
            stats=_stats(project=project, drafts=drafts),
            diff=_diff(drafts.records, previous),
            previous=previous,
            trigger=trigger,
            created_by=created_by,
        )
        _records_write(version=version, drafts=drafts.records)
    return version, True


def dataset_eval_shortfall(
    *, eval_examples: int, min_eval_examples: int, golden_examples: int = 0
) -> str:
    """Why an eval split of `eval_examples`, with a golden set of `golden_examples` beside it,
    cannot feed the promotion gate, which decides on no fewer than the policy's
    `min_eval_examples` questions of both together; "" when it can."""
    if eval_examples + golden_examples >= min_eval_examples:
        return ""
    held = f"The eval split holds {eval_examples} example{'' if eval_examples == 1 else 's'}"
    held += f" and the golden set {golden_examples}, together" if golden_examples else ","
    return (
        f"{held} fewer than the {min_eval_examples} the promotion gate needs (the curation "
        "policy's minimum eval examples), so training on it with evaluate=true is refused. "
        "Curate more feedback, raise the eval fraction, add a golden set or lower the minimum, "
        "or train with evaluate=false."
    )


def dataset_version_eval_shortfall(*, version: DatasetVersion, min_eval_examples: int) -> str:
    return dataset_eval_shortfall(
        eval_examples=version.counts["eval"], min_eval_examples=min_eval_examples
    )
