"""LoRA training throughput: Flywheel's training loop against transformers' Trainer on the
same data and hyperparameters, and both against the machine's matmul peak.

One process, side by side: (a) retrain.training.lora.lora_train, (b) a plain transformers Trainer
with the same peft LoRA config, batches and learning-rate schedule (no evaluation, saving or
logging), and (c) the float32 matmul rate of torch on this machine with the same threads.
Throughput counts the non-padding tokens that went through forward and backward, over the
training loop's time (model loading excluded). The data is synthetic chat in the shape
curation produces: a system prompt with retrieved context, a question, a short answer.

Run from the repository root: .venv/bin/python bench/training.py [--threads 1]
"""

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import _cpu_model, table

PRODUCTS = ["Orbwell", "Quillmate", "Tallyroo", "Brightfern"]
PLANS = ["Sprout", "Canopy", "Grove"]
CONTEXT_SENTENCES = [
    "{product} keeps every note on each device and merges changes when a device reconnects.",
    "The {plan} plan of {product} costs {number} euros per user per month.",
    "A shelf in {product} is a folder of notes that can be shared with up to {number} people.",
    "Deleted notes stay in the bin of {product} for {number} days before they are erased.",
    "Press Ctrl+Shift+{letter} in {product} to lock the app when you step away.",
    "Invoices of {product} are issued on day {number} of each month.",
    "Error E-{code} in {product} means the shelf is locked by another device.",
    "Attachments larger than {number} MB are not synced by {product}.",
    "The {plan} plan adds single sign-on and an audit log to {product}.",
    "Refunds for {product} are possible within {number} days of the invoice.",
]
QUESTIONS = [
    (
        "What does the {plan} plan of {product} cost?",
        "The {plan} plan costs {number} euros per user per month.",
    ),
    (
        "How long does {product} keep deleted notes?",
        "Deleted notes stay in the bin for {number} days.",
    ),
    (
        "What does error E-{code} mean in {product}?",
        "E-{code} means another device is still uploading to the shelf; wait for it to finish.",
    ),
    (
        "How many people can I share a {product} shelf with?",
        "A shelf can be shared with up to {number} people.",
    ),
]


def synthetic_records(count: int, *, seed: int = 0) -> list[SimpleNamespace]:
    """Records shaped like DatasetRecords (prompt messages + chosen), of varied lengths."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        values = {
            "product": rng.choice(PRODUCTS),
            "plan": rng.choice(PLANS),
            "number": rng.randint(2, 90),
            "code": rng.randint(1000, 9999),
            "letter": rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ"),
        }
        context = " ".join(
            sentence.format(**values)
            for sentence in rng.sample(CONTEXT_SENTENCES, k=rng.randint(3, 9))
        )
        question, answer = rng.choice(QUESTIONS)
        system = f"Answer from the context below.\n\nContext:\n{context}"
        prompt = [
            {"role": "system", "content": system},
            {"role": "user", "content": question.format(**values)},
        ]
        records.append(SimpleNamespace(prompt=prompt, chosen=answer.format(**values)))
    return records


def matmul_gflops(*, size: int = 2048, repeats: int = 10) -> float:
    """The float32 matmul rate per thread's CPU-second (as the training rates below), best
    of `repeats` after one warm-up product, times the threads: the peak of this process."""
    import torch

    left, right = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(left, right)
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        torch.matmul(left, right)
        best = min(best, time.process_time() - started)
    return 2 * size**3 * torch.get_num_threads() / best / 1e9


class LoopClock:
    """Wall-clock and CPU time of a training loop, from its first step to its last.

    CPU time is what the process itself computed: on a machine shared with other work it
    moves much less than wall-clock time, which also counts waiting for a core.
    """

    def __init__(self) -> None:
        self.started: tuple[float, float] | None = None
        self.stopped: tuple[float, float] | None = None

    def start(self) -> None:
        if self.started is None:
            self.started = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        self.stopped = (time.perf_counter(), time.process_time())

    @property
    def wall_seconds(self) -> float:
        return self.stopped[0] - self.started[0]

    @property
    def cpu_seconds(self) -> float:
        return self.stopped[1] - self.started[1]


def run_lora_train(base_model_path: Path, records, parameters) -> dict:
    from retrain.training.lora import lora_train

    clock = LoopClock()

    def loop_starts_unless_running() -> bool:  # asked before every step: never stops the run
        clock.start()
        return False

    with tempfile.TemporaryDirectory(prefix="bench-training-") as output_dir:
        result = lora_train(
            base_model_path=base_model_path,
            records=records,
            parameters=parameters,
            output_dir=Path(output_dir),
            should_stop=loop_starts_unless_running,
            on_step=lambda step, total, loss, tokens_trained: clock.stop(),
        )
    return {
        "tokens": result.tokens_trained,
        "clock": clock,
        "steps": result.steps,
        "train_loss": result.train_loss,
    }


def run_hf_trainer(base_model_path: Path, records, parameters) -> dict:
    """transformers' Trainer on the very same tokenised examples (answer-only labels)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from retrain.training.lora import IGNORED_LABEL, sft_examples, tokenize_for_sft

    clock = LoopClock()

    class Timing(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.start()

        def on_train_end(self, args, state, control, **kwargs):
            clock.stop()

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_path), local_files_only=True)
    examples = tokenize_for_sft(tokenizer, sft_examples(records), parameters.max_length)
    config = AutoConfig.from_pretrained(str(base_model_path), local_files_only=True)
    # The bundled model's folder, converted from a GGUF file, still names GGUF quantization in
    # its config although its safetensors weights are plain float32; the Trainer would refuse
    # to train a "quantized" model.
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    torch.manual_seed(parameters.seed)
    base_model = AutoModelForCausalLM.from_pretrained(
        str(base_model_path), config=config, local_files_only=True
    )
    model = get_peft_model(
        base_model,
        LoraConfig(
            r=parameters.r,
            lora_alpha=parameters.lora_alpha,
            lora_dropout=parameters.lora_dropout,
            target_modules=list(parameters.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as output_dir:
        arguments = TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=parameters.batch_size,
            gradient_accumulation_steps=parameters.gradient_accumulation_steps,
            learning_rate=parameters.learning_rate,
            num_train_epochs=parameters.epochs,
            lr_scheduler_type="linear",
            weight_decay=parameters.weight_decay,
            seed=parameters.seed,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=False,
            label_names=["labels"],
            use_cpu=not torch.cuda.is_available(),
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=examples,
            data_collator=DataCollatorForSeq2Seq(
                tokenizer, padding=True, label_pad_token_id=IGNORED_LABEL
            ),
            processing_class=tokenizer,
            callbacks=[Timing()],
        )
        output = trainer.train()
    return {
        "tokens": round(sum(len(example["input_ids"]) for example in examples) * parameters.epochs),
        "clock": clock,
        "steps": output.global_step,
        "train_loss": output.training_loss,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice)",
    )
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")
    import django

    django.setup()
    import peft
    import torch
    import transformers

    from flywheel.ml.bundled import base_model_path
    from retrain.training.lora import TrainingParameters, training_device

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"{_cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__} (intra-op threads: {torch.get_num_threads()}), transformers "
        f"{transformers.__version__}, peft {peft.__version__}, device {training_device()}, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    parameters = TrainingParameters(
        r=8,
        lora_alpha=16,
        batch_size=4,
        learning_rate=2e-4,
        epochs=1.0,
        max_length=args.max_length,
        checkpoint_every_steps=10**6,
    )
    records = synthetic_records(args.examples)
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {args.examples} synthetic chat examples, "
        f"max_length {args.max_length}, LoRA r {parameters.r} alpha {parameters.lora_alpha} on "
        f"{', '.join(parameters.target_modules)}, batch {parameters.batch_size}, "
        f"lr {parameters.learning_rate}, 1 epoch\n"
    )

    path = base_model_path()
    peak = matmul_gflops()
    # Not measured: the first steps of a process pay for allocations and thread start-up.
    run_lora_train(path, records[: parameters.batch_size], replace(parameters, max_steps=2))
    flywheel = run_lora_train(path, records, parameters)
    trainer = run_hf_trainer(path, records, parameters)
    parameter_count = trainer["parameters"]

    threads = torch.get_num_threads()

    def undisturbed_tokens_per_second(run: dict) -> float:
        """Per CPU-second of each thread: the rate with its cores to itself."""
        return run["tokens"] * threads / run["clock"].cpu_seconds

    def row(name: str, run: dict) -> list[str]:
        clock, rate = run["clock"], undisturbed_tokens_per_second(run)
        estimated_gflops = 6 * parameter_count * rate / 1e9
        return [
            name,
            str(run["steps"]),
            str(run["tokens"]),
            f"{run['train_loss']:.3f}",
            f"{clock.wall_seconds:.1f}",
            f"{run['tokens'] / clock.wall_seconds:.0f}",
            f"{clock.cpu_seconds:.1f}",
            f"{rate:.0f}",
            f"{estimated_gflops:.1f}",
            f"{100 * estimated_gflops / peak:.0f} %",
        ]

    headers = [
        "run",
        "steps",
        "tokens",
        "train loss",
        "wall s",
        "tokens/s (wall)",
        "CPU s",
        "tokens/s (CPU)",
        "≈ GFLOP/s",
        "of matmul peak",
    ]
    print(
        table(
            headers,
            [row("(a) lora_train", flywheel), row("(b) transformers Trainer + peft", trainer)],
        )
    )
    wall_ratio = (flywheel["tokens"] / flywheel["clock"].wall_seconds) / (
        trainer["tokens"] / trainer["clock"].wall_seconds
    )
    cpu_ratio = undisturbed_tokens_per_second(flywheel) / undisturbed_tokens_per_second(trainer)
    print(
        f"\n(c) matmul peak: {peak:.1f} GFLOP/s (float32 2048x2048, best of 10 by CPU time, "
        f"intra-op threads: {threads}).\n"
        f"a/b throughput: {cpu_ratio:.2f} by CPU time, {wall_ratio:.2f} by wall-clock time.\n"
        f"tokens: non-padding tokens through forward and backward. tokens/s (CPU) = tokens * "
        f"threads / CPU seconds, the rate undisturbed by other work on the machine.\n"
        f"≈ GFLOP/s = 6 * N * tokens/s (CPU), N = {parameter_count / 1e6:.1f} M parameters "
        "(frozen and LoRA): the usual rough estimate of training FLOP/s. It overstates LoRA's "
        "work (frozen weights get no weight gradients) and counts the vocabulary projection at "
        "every position, which (a) computes only where an answer token is predicted."
    )


if __name__ == "__main__":
    main()
