"""Chat latency, split: where the time of one POST /v1/chat/completions goes.

The demo knowledge base is indexed into a project of its own; a dozen questions about it are
asked over real HTTP, one after the other, with hybrid RAG and the bundled generator
(SmolLM2-135M-Instruct on the CPU). The split comes from what every answer logs: the
Interaction's metadata["flywheel"]["timings_ms"] (embed, retrieve, generate) and latency_ms
(from the start of the request's work to the logged answer).

Then generation alone, in this process, with 1 and 2 intra-op torch threads taking turns on
the same served prompt: prompt reading (prefill) and decoding timed apart, beside the
memory-bandwidth bound of decoding (each new token reads every weight once: bytes of weights
per token against the bandwidth of a large in-memory copy with the same threads).

Run from the repository root: .venv/bin/python bench/chat_latency.py [--max-tokens 64]
"""

import argparse
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import (
    REPOSITORY_ROOT,
    bench_django_setup,
    machine_context,
    percentiles,
    table,
    wsgi_server,
)

QUESTIONS = [
    "How much does the Canopy plan cost?",
    "Which plan includes single sign-on?",
    "When are invoices issued?",
    "How long do I have to ask for a refund?",
    "Does a downgrade take effect immediately?",
    "Which operating systems does Quillmate run on?",
    "How many collaborators can a shelf be shared with?",
    "How do I create a new shelf?",
    "How long do deleted notes stay in the bin?",
    "How are my notes encrypted?",
    "What happens when two people edit the same paragraph offline?",
    "What is the largest attachment I can sync?",
    "Sync is stuck, what should I do?",
]
WARM_UP_QUESTION = "How long does a workspace export link stay valid?"


def knowledge_base_index(project) -> int:
    """Load the demo knowledge base and index it in this process; the number of chunks."""
    from flywheel.services import document_index, documents_load_folder

    folder = REPOSITORY_ROOT / "demo" / "knowledge_base"
    return sum(
        document_index(document_id=result.document.pk) or 0
        for result in documents_load_folder(project=project, folder=folder)
    )


def ask(session, *, base_url: str, raw_key: str, question: str, max_tokens: int) -> uuid.UUID:
    """POST one question; return the id of the Interaction it logged."""
    response = session.post(
        f"{base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {raw_key}"},
        json={"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens},
    )
    if response.status_code != 200:
        raise SystemExit(f"chat answered {response.status_code}: {response.text[:500]}")
    return uuid.UUID(response.json()["flywheel"]["interaction_id"])


def row(name: str, values: list[float]) -> list[str]:
    p50, p95 = percentiles(values)
    return [name, f"{p50:.0f}", f"{p95:.0f}", f"{sum(values) / len(values):.0f}"]


THREAD_COUNTS = (1, 2)
# Bytes copied to measure memory bandwidth: far past every CPU cache.
COPY_BYTES = 512 * 1024**2


def copy_bandwidth(*, threads: int, repeats: int = 5) -> float:
    """Bytes per second moved (read and written) by a large tensor copy with `threads`."""
    import torch

    torch.set_num_threads(threads)
    source = torch.ones(COPY_BYTES // 4, dtype=torch.float32)
    target = torch.empty_like(source)
    target.copy_(source)  # fault the pages in
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        target.copy_(source)
        seconds.append(time.perf_counter() - started)
    return 2 * COPY_BYTES / statistics.median(seconds)


def generation_timed(generator, messages: list[dict], *, new_tokens: int) -> float:
    """Seconds to read the prompt and write exactly `new_tokens` tokens, greedily."""
    import torch

    inputs = generator.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    pad = generator.tokenizer.pad_token_id or generator.tokenizer.eos_token_id
    started = time.perf_counter()
    with torch.inference_mode():
        generator.model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=pad,
        )
    return time.perf_counter() - started


def threads_report(*, project, interaction, new_tokens: int, rounds: int) -> str:
    """Generation of one served prompt with each of THREAD_COUNTS, in turns (so that the
    machine's other load falls on all alike), beside the memory-bandwidth bound."""
    import torch

    from flywheel.ml.loading import load_generator
    from flywheel.services.chat import prompt_messages_build

    generator = load_generator()
    messages = prompt_messages_build(
        project=project, messages=interaction.messages, passages=interaction.retrieved
    )
    prompt_tokens = generator.count_prompt_tokens(messages)
    weight_bytes = sum(p.numel() * p.element_size() for p in generator.model.parameters())
    prefill: dict[int, list[float]] = {threads: [] for threads in THREAD_COUNTS}
    whole: dict[int, list[float]] = {threads: [] for threads in THREAD_COUNTS}
    for threads in THREAD_COUNTS:  # warm-up
        torch.set_num_threads(threads)
        generation_timed(generator, messages, new_tokens=2)
    for _ in range(rounds):
        for threads in THREAD_COUNTS:
            torch.set_num_threads(threads)
            prefill[threads].append(generation_timed(generator, messages, new_tokens=1))
            whole[threads].append(generation_timed(generator, messages, new_tokens=new_tokens))
    rows = []
    for threads in THREAD_COUNTS:
        prefill_seconds = statistics.median(prefill[threads])
        whole_seconds = statistics.median(whole[threads])
        decode_rate = (new_tokens - 1) / (whole_seconds - prefill_seconds)
        bandwidth = copy_bandwidth(threads=threads)
        rows.append(
            [
                str(threads),
                f"{prefill_seconds * 1000:.0f}",
                f"{decode_rate:.1f}",
                f"{new_tokens / whole_seconds:.1f}",
                f"{bandwidth / 1e9:.1f}",
                f"{bandwidth / weight_bytes:.0f}",
                f"{decode_rate / (bandwidth / weight_bytes) * 100:.0f} %",
            ]
        )
    print(
        f"\ngeneration alone, {prompt_tokens}-token served prompt + {new_tokens} tokens, "
        f"median of {rounds} rounds, thread counts in turns; weights "
        f"{weight_bytes / 1e6:.0f} MB ({next(generator.model.parameters()).dtype}); load "
        f"average {os.getloadavg()[0]:.1f} at the end\n"
    )
    return table(
        [
            "torch threads",
            "prefill ms",
            "decode tokens/s",
            "end-to-end tokens/s",
            "copy GB/s (read + write)",
            "bound tokens/s",
            "of the bound",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=64, help="per answer")
    parser.add_argument(
        "--questions", type=int, default=len(QUESTIONS), help=f"at most {len(QUESTIONS)}"
    )
    parser.add_argument(
        "--thread-rounds", type=int, default=5, help="rounds of the 1-vs-2-threads comparison"
    )
    args = parser.parse_args()

    # A database of its own, so that other benchmarks can run beside it.
    bench_django_setup("flywheel_bench_chat")
    print(machine_context())
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · chat latency, max_tokens {args.max_tokens}")

    import requests

    from flywheel.ml.bundled import base_model_path
    from flywheel.models import ApiKey, Interaction, Project
    from flywheel.services import api_key_create

    project = Project.objects.create(slug="bench-chat", name="Bench: chat latency")
    chunk_count = knowledge_base_index(project)
    raw_key = api_key_create(project=project, kind=ApiKey.Kind.SECRET, name="bench").raw_key
    questions = QUESTIONS[: args.questions]

    round_trip_ms, interaction_ids = [], []
    with wsgi_server() as base_url, requests.Session() as session:
        for question in [WARM_UP_QUESTION, *questions]:
            started = time.perf_counter()
            interaction_ids.append(
                ask(
                    session,
                    base_url=base_url,
                    raw_key=raw_key,
                    question=question,
                    max_tokens=args.max_tokens,
                )
            )
            round_trip_ms.append((time.perf_counter() - started) * 1000)
    # The warm-up call loaded the generator and the embedder: it is left out of the figures.
    interaction_ids, round_trip_ms = interaction_ids[1:], round_trip_ms[1:]

    interactions = Interaction.objects.in_bulk(interaction_ids)
    logged = [interactions[pk] for pk in interaction_ids]
    timings = [interaction.metadata["flywheel"]["timings_ms"] for interaction in logged]
    generate_ms = [timing["generate_ms"] for timing in timings]
    completion_tokens = [interaction.completion_tokens for interaction in logged]
    prompt_tokens = [interaction.prompt_tokens for interaction in logged]

    print(
        f"\n{len(questions)} questions, one at a time, after one warm-up call; demo knowledge "
        f"base: {chunk_count} chunks; generator: {base_model_path().name} on the CPU\n"
    )
    rows = [
        row("embed (query embedding)", [timing["embed_ms"] for timing in timings]),
        row("retrieve (hybrid search)", [timing["retrieve_ms"] for timing in timings]),
        row("generate", generate_ms),
        row("total (Interaction.latency_ms)", [interaction.latency_ms for interaction in logged]),
        row("HTTP round trip (client)", round_trip_ms),
    ]
    print(table(["stage", "p50 ms", "p95 ms", "mean ms"], rows))

    tokens_per_second = [
        tokens / (ms / 1000) for tokens, ms in zip(completion_tokens, generate_ms, strict=True)
    ]
    overall_rate = sum(completion_tokens) / (sum(generate_ms) / 1000)
    print(
        f"\ngeneration: {overall_rate:.1f} completion tokens/s overall "
        f"(p50 {percentiles(tokens_per_second)[0]:.1f} per answer), "
        f"{sum(prompt_tokens) / len(prompt_tokens):.0f} prompt tokens and "
        f"{sum(completion_tokens) / len(completion_tokens):.0f} completion tokens per answer "
        "on average; generate_ms includes reading the prompt"
    )
    longest = max(logged, key=lambda interaction: interaction.prompt_tokens)
    print(
        threads_report(
            project=project,
            interaction=longest,
            new_tokens=args.max_tokens,
            rounds=args.thread_rounds,
        )
    )


if __name__ == "__main__":
    main()
