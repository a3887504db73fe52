"""Exports of a dataset version, per split, in the dataset formats TRL's trainers take
unchanged — `chat` (messages) and `prompt_completion` for SFTTrainer, `dpo` (prompt, chosen,
rejected) for DPOTrainer — and Alpaca rows, which are not a TRL format. Each is written as JSON
lines or as Parquet.

A Parquet export declares its `datasets` features in the file's schema metadata, under the
`huggingface` key that `datasets` itself writes, so `load_dataset("parquet", ...)` yields
exactly those features.

A split without records has no export: a JSON-lines file with no line carries no columns, and
`datasets.load_dataset` fails on it, so asking for one raises `EmptyExport` instead of
answering with an empty file."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.models import Interaction
from retrain.models import DatasetRecord, DatasetVersion

Kind = DatasetRecord.Kind
RECORD_BATCH_SIZE = 2000
EXPORT_FORMATS = ("chat", "prompt_completion", "dpo", "alpaca")
PREFERENCE_FORMATS = ("dpo",)
FILE_TYPES = ("jsonl", "parquet")
SPLITS = ("train", "eval", "all")
CONTENT_TYPES = {
    "jsonl": "application/x-ndjson; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
# How prompt_messages_build introduces the retrieved context in our system prompt.
CONTEXT_HEADER = "\n\nContext:\n"
# Instructions rather than turns of the conversation (an app may log either).
INSTRUCTION_ROLES = ("system", "developer")

_STRING = {"dtype": "string", "_type": "Value"}
# A list of messages. `datasets` 4 and later write a list as {"_type": "List", ...}; the
# one-element list spelled here is the older form, which those read as the same feature and
# which `datasets` 3 reads too.
_MESSAGES = [{"role": _STRING, "content": _STRING}]
# Each format's columns as `datasets` features, in the order of the rows.
FEATURES: dict[str, dict] = {
    "chat": {"messages": _MESSAGES},
    "prompt_completion": {"prompt": _MESSAGES, "completion": _MESSAGES},
    "dpo": {"prompt": _MESSAGES, "chosen": _MESSAGES, "rejected": _MESSAGES},
    "alpaca": {"instruction": _STRING, "input": _STRING, "output": _STRING, "system": _STRING},
}


class EmptyExport(ValueError):
    """The split of this format holds no records."""


@dataclass(frozen=True)
class ExportFile:
    """One export ready to send: its content is produced as it is read, batch by batch, so a
    large dataset never sits in memory."""

    filename: str
    content_type: str
    content: Iterator[bytes]


def dataset_export_rows(*, version: DatasetVersion, export_format: str, split: str) -> int:
    """How many rows the export holds, from the version's counts."""
    counts = version.counts
    if export_format in PREFERENCE_FORMATS:
        by_split = {"train": counts["preference_train"], "eval": counts["preference_eval"]}
    else:
        by_split = {"train": counts["train"], "eval": counts["eval"]}
    return sum(by_split.values()) if split == "all" else by_split[split]


def _message(message: dict) -> dict:
    """A message as the declared features hold it: role and content, nothing else."""
    return {"role": message["role"], "content": message["content"]}


def _answer(content: str) -> list[dict]:
    return [{"role": "assistant", "content": content}]


def _system_and_context(record: DatasetRecord) -> tuple[str, str]:
    """The system prompt, and the retrieved context our template put into it. A logged
    interaction's system prompt is the app's own and is kept whole."""
    system = "\n\n".join(m["content"] for m in record.prompt if m["role"] in INSTRUCTION_ROLES)
    if record.source != Interaction.Source.LOG and CONTEXT_HEADER in system:
        system, context = system.split(CONTEXT_HEADER, 1)
        return system, context
    return system, ""


def _alpaca_row(record: DatasetRecord) -> dict:
    """instruction: the last question; input: the context served and any earlier turns;
    system: the system prompt without that context."""
    *earlier, last = [m for m in record.prompt if m["role"] not in INSTRUCTION_ROLES]
    system, context = _system_and_context(record)
    conversation = "\n".join(f"{m['role']}: {m['content']}" for m in earlier)
    return {
        "instruction": last["content"],
        "input": "\n\n".join(part for part in (context, conversation) if part),
        "output": record.chosen,
        "system": system,
    }


def _row(record: DatasetRecord, export_format: str) -> dict:
    prompt = [_message(message) for message in record.prompt]
    if export_format == "chat":
        return {"messages": [*prompt, *_answer(record.chosen)]}
    if export_format == "prompt_completion":
        return {"prompt": prompt, "completion": _answer(record.chosen)}
    if export_format == "alpaca":
        return _alpaca_row(record)
    return {
        "prompt": prompt,
        "chosen": _answer(record.chosen),
        "rejected": _answer(record.rejected),
    }


def _rows(*, version: DatasetVersion, export_format: str, split: str) -> Iterator[dict]:
    """The export's rows, after checking that there is one: ValueError for an unknown format
    or split, EmptyExport for a split with no rows. The checks run at the call, not at the
    first row, so that a caller can still answer with an error."""
    if export_format not in EXPORT_FORMATS or split not in SPLITS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS} and split one of {SPLITS}")
    preference = export_format in PREFERENCE_FORMATS
    if not dataset_export_rows(version=version, export_format=export_format, split=split):
        what = "preference pairs" if preference else "instruction examples"
        where = "" if split == "all" else f" in its {split} split"
        raise EmptyExport(
            f"Dataset v{version.number} has no {what}{where}, so there is no {export_format} "
            "export of it: a file without rows would not load as a dataset."
        )
    records = version.records.filter(kind=Kind.PREFERENCE if preference else Kind.SFT)
    if split != "all":
        records = records.filter(split=split)
    return (
        _row(record, export_format)
        for record in records.order_by("pk").iterator(chunk_size=RECORD_BATCH_SIZE)
    )


def dataset_export_lines(
    *, version: DatasetVersion, export_format: str, split: str
) -> Iterator[str]:
    """The export as JSON lines. Raises ValueError for an unknown format or split and
    EmptyExport for a split with no rows, before the first line is asked for."""
    rows = _rows(version=version, export_format=export_format, split=split)
    return (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _arrow_type(feature: dict | list) -> pa.DataType:
    if isinstance(feature, list):
        return pa.list_(_arrow_type(feature[0]))
    if feature.get("_type") == "Value":
        return pa.string()
    return pa.struct([(name, _arrow_type(child)) for name, child in feature.items()])


def _parquet_schema(export_format: str) -> pa.Schema:
    """The Parquet schema of a format, its `datasets` features declared in the metadata."""
    features = FEATURES[export_format]
    return pa.schema(
        [(name, _arrow_type(feature)) for name, feature in features.items()],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )


class _ChunkSink:
    """A write-only file that hands back what was written since it was last asked."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        written, self._parts = b"".join(self._parts), []
        return written


def _parquet_chunks(rows: Iterator[dict], schema: pa.Schema) -> Iterator[bytes]:
    """One row group per batch of records, each sent as soon as it is written; the footer
    that indexes them comes last."""
    sink = _ChunkSink()
    with pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema) as writer:
        while batch := list(islice(rows, RECORD_BATCH_SIZE)):
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            yield sink.take()
    yield sink.take()


def dataset_export_file(
    *, version: DatasetVersion, export_format: str, split: str, file_type: str
) -> ExportFile:
    """The export as a file: JSON lines or Parquet. Raises ValueError for an unknown format,
    split or file type and EmptyExport for a split with no rows, before any content is
    produced."""
    if file_type not in FILE_TYPES:
        raise ValueError(f"file type must be one of {FILE_TYPES}")
    content: Iterator[bytes]
    if file_type == "jsonl":
        lines = dataset_export_lines(version=version, export_format=export_format, split=split)
        content = (line.encode() for line in lines)
    else:
        rows = _rows(version=version, export_format=export_format, split=split)
        content = _parquet_chunks(rows, _parquet_schema(export_format))
    return ExportFile(
        filename=(
            f"{version.project.slug}-dataset-v{version.number}-{export_format}-{split}.{file_type}"
        ),
        content_type=CONTENT_TYPES[file_type],
        content=content,
    )
