"""Exports of a dataset version, per split: chat messages and Alpaca rows for supervised
fine-tuning, prompt/chosen/rejected preference pairs for DPO, as JSON lines."""

import json
from collections.abc import Iterator

from retrain.models import DatasetRecord, DatasetVersion

Kind = DatasetRecord.Kind
RECORD_BATCH_SIZE = 2000
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
