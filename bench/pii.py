"""PII scrubbing: recall and precision per kind on the labelled support-chat lines, and how
many texts per second `pii_scrub` handles on them.

The labelled set (tests/data/pii/labelled.jsonl) is repeated until it holds --texts texts;
each text is scrubbed on its own, as curation does, with the kinds the default policy scrubs
for its source (end-user messages, model answers or corrections; IP addresses only in
end-user messages, private-range ones only on lines marked to scrub them). Person names are
not detected (see retrain/curation/pii.py for the measurements behind that), so there is no
figure with names: the PERSON row of the table shows what is left in.

Run from the repository root: .venv/bin/python bench/pii.py [--texts 5000]
"""

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import REPOSITORY_ROOT, _cpu_model, _memory_gib, percentiles, table
from retrain.curation.pii import (
    PII_ENTITIES_DEFAULT,
    PII_SOURCES,
    pii_evaluate,
    pii_labelled_read,
    pii_scrub,
)

LABELLED_PATH = REPOSITORY_ROOT / "tests" / "data" / "pii" / "labelled.jsonl"
ROUNDS = 3


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=5_000, help="texts scrubbed per round")
    args = parser.parse_args()

    print(
        f"{_cpu_model()}, {os.cpu_count()} cores, {_memory_gib():.0f} GiB RAM, "
        f"Python {platform.python_version()}"
    )
    labelled = pii_labelled_read(LABELLED_PATH)
    by_source = ", ".join(
        f"{sum(item.source == source for item in labelled)} {source}" for source in PII_SOURCES
    )
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {len(labelled)} labelled lines ({by_source})")

    scores = pii_evaluate(labelled)
    rows = [
        [
            score.kind,
            score.labelled,
            score.found,
            score.matched,
            ratio(score.recall),
            ratio(score.precision),
        ]
        for score in scores.values()
    ]
    print()
    print(table(["kind", "labelled", "found", "matched", "recall", "precision"], rows))

    texts = labelled * (args.texts // len(labelled) + 1)
    texts = texts[: args.texts]
    round_seconds = []
    latencies_ms = []
    for _ in range(ROUNDS):
        round_started = time.perf_counter()
        for text, _, source, scrub_private_ips in texts:
            started = time.perf_counter()
            pii_scrub(text, kinds=PII_ENTITIES_DEFAULT[source], scrub_private_ips=scrub_private_ips)
            latencies_ms.append((time.perf_counter() - started) * 1000)
        round_seconds.append(time.perf_counter() - round_started)
    p50, p95 = percentiles(latencies_ms)
    best = min(round_seconds)
    characters = sum(len(item.text) for item in texts)
    print()
    print(
        table(
            ["names", "texts", "best of rounds s", "texts/s", "MB/s", "p50 ms", "p95 ms"],
            [
                [
                    "no",
                    len(texts),
                    f"{best:.3f}",
                    f"{len(texts) / best:,.0f}",
                    f"{characters / best / 1e6:.2f}",
                    f"{p50:.3f}",
                    f"{p95:.3f}",
                ],
            ],
        )
    )
    print(f"\n{ROUNDS} rounds; mean text length {characters / len(texts):.0f} characters")
    print("With names: not measured, names are not detected (see retrain/curation/pii.py).")


if __name__ == "__main__":
    main()
