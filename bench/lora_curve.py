"""LoRA training curve: answer quality against the number of steps and the learning rate, so
that the closed-loop benchmark's LoopSettings (train_steps, learning_rate) are measured, not
guessed.

No database at all: the examples are built straight from a benchmark folder (corpus/ and
questions.jsonl, read as bench/loop reads them), in the RAFT style curation produces. Each
question reads four passages rendered exactly as serving renders them (flywheel.services.chat's
prompt_messages_build, default system prompt): the passage of its source document that shares
the most tokens with the reference answer, among three distractor passages drawn from other
documents, shuffled with a seed of the question's own. Passages are the chunks the index would
hold (document title, heading path, text). The target is the reference answer.

The training questions (split "train") are trained on with retrain.training.lora.lora_train
(batch 4, max_length 384, r/alpha defaults, the learning rate decaying linearly to zero over
max_steps, as the loop's training job does). Each setting is scored on (a) the training
questions' paraphrases, each with a context drawn afresh, and (b) the held-out questions: the
mean token F1 (retrain.evaluation.metrics.token_f1) of greedy answers of at most 48 new tokens
against the reference; --loss adds the reference answers' loss (metrics.eval_loss). Step 0 is
the base model.

By default each learning rate is trained once, to the largest step count, and the checkpoints
lora_train writes on the way are scored at the smaller ones. Those are not quite what the loop
runs: the learning rate decays to zero over max_steps, so step 10 of a 40-step run has moved
the adapter about 1.6 times as far as a 10-step run would have. --run-per-step-count trains a
run of its own per step count (max_steps = steps, exactly as the loop trains), at the cost of
more steps (10+20+40 instead of 40).

Run from the repository root:
  .venv/bin/python bench/lora_curve.py [--corpus demo/flywheel-bench] [--steps 0,10,20,40]
      [--learning-rates 3e-4,1e-3,3e-3] [--seed 0] [--run-per-step-count] [--loss]
"""

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import _cpu_model, _memory_gib, table

# One thread, set before torch is imported (in main): others share this machine.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Django is set up for its settings only (model paths, chunking options, the chat prompt's
# module). No query is ever made; should one slip in, this address refuses it at once, where
# the development settings without DATABASE_URL would start the embedded PostgreSQL.
NO_DATABASE_URL = "postgresql://no-database@127.0.0.1:9/lora_curve_needs_no_database"
DISTRACTORS = 3
MAX_NEW_TOKENS = 48
BATCH_SIZE = 4
MAX_LENGTH = 384
EVAL_BATCH = 10
# A trained setting may cost held-out F1 only this much against the base model.
HELDOUT_TOLERANCE = 0.01


def django_setup_without_database() -> None:
    os.environ["DATABASE_URL"] = NO_DATABASE_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")
    import django

    django.setup()


def started_clock():
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    return started, say


@dataclass(frozen=True)
class Passage:
    source: str  # the document's path relative to the corpus folder
    title: str
    heading: str
    text: str
    tokens: Counter


def corpus_passages(corpus_dir: Path) -> dict[str, list[Passage]]:
    """Every document's chunks, as ingestion and indexing would cut and title them."""
    from flywheel.chunking import document_chunks
    from flywheel.services.documents import CONTENT_TYPE_BY_SUFFIX, _title_from_text
    from flywheel.services.indexing import chunking_options_from_settings
    from retrain.evaluation.metrics import _normalised_tokens

    options = chunking_options_from_settings()
    documents: dict[str, list[Passage]] = {}
    for path in sorted(corpus_dir.rglob("*")):
        content_type = CONTENT_TYPE_BY_SUFFIX.get(path.suffix.lower())
        if not path.is_file() or content_type is None:
            continue
        content = path.read_text(encoding="utf-8")
        title = _title_from_text(path=path, content=content)
        source = path.relative_to(corpus_dir).as_posix()
        documents[source] = [
            Passage(
                source=source,
                title=title,
                heading=draft.heading,
                text=draft.text,
                tokens=Counter(_normalised_tokens(draft.text)),
            )
            for draft in document_chunks(
                content=content, content_type=content_type, options=options
            )
        ]
    if not documents:
        raise SystemExit(f"{corpus_dir} holds no .md, .txt or .html documents")
    return documents


def answer_passage(answer: str, candidates: list[Passage]) -> Passage:
    """The passage sharing the most (normalised) tokens with the answer; the first on a tie."""
    from retrain.evaluation.metrics import _normalised_tokens

    wanted = Counter(_normalised_tokens(answer))
    return max(candidates, key=lambda passage: sum((wanted & passage.tokens).values()))


class RaftBuilder:
    """Records (prompt messages + chosen) whose context is the answer's passage among
    distractors from other documents, drawn and shuffled by a seed of the text's own."""

    def __init__(self, documents: dict[str, list[Passage]], *, seed: int):
        from flywheel.services.chat import prompt_messages_build

        self.documents = documents
        self.seed = seed
        self.build = prompt_messages_build
        # prompt_messages_build reads only the project's system_prompt; "" is the default one.
        self.project = SimpleNamespace(system_prompt="")

    def record(self, *, question, text: str, variant: int) -> SimpleNamespace:
        if question.source is not None:
            if question.source not in self.documents:
                raise SystemExit(
                    f"question on line {question.number}: source {question.source!r} is not a "
                    "file of the corpus (document ids need the database; use paths)"
                )
            candidates = self.documents[question.source]
        else:
            candidates = [passage for passages in self.documents.values() for passage in passages]
        golden = answer_passage(question.answer, candidates)
        others = [
            passage
            for source, passages in self.documents.items()
            if source != golden.source
            for passage in passages
        ]
        rng = random.Random(f"{self.seed}:{question.number}:{variant}")
        context = [golden, *rng.sample(others, k=min(DISTRACTORS, len(others)))]
        rng.shuffle(context)
        passages = [
            {"rank": rank, "title": p.title, "heading": p.heading, "text": p.text}
            for rank, p in enumerate(context, start=1)
        ]
        prompt = self.build(
            project=self.project,
            messages=[{"role": "user", "content": text}],
            passages=passages,
        )
        return SimpleNamespace(prompt=prompt, chosen=question.answer)


@dataclass
class Measurement:
    learning_rate: str  # as given on the command line; "-" for the base model
    steps: int
    paraphrase_f1: float
    heldout_f1: float
    paraphrase_loss: float | None
    heldout_loss: float | None
    train_loss: float | None
    train_seconds: float
    eval_seconds: float


def greedy_answers(model, tokenizer, records, *, batch_size: int = EVAL_BATCH) -> list[str]:
    """Greedy answers of at most MAX_NEW_TOKENS tokens, as metrics.evaluate_model generates
    them, but in left-padded batches: on one thread that is about a third faster, and the
    answers came out identical to one-at-a-time generation when checked on this corpus."""
    import torch

    from retrain.training.lora import pad_token_id_of

    pad = pad_token_id_of(tokenizer)
    answers = []
    for start in range(0, len(records), batch_size):
        prompts = [
            list(
                tokenizer.apply_chat_template(
                    record.prompt, add_generation_prompt=True, tokenize=True, return_dict=True
                )["input_ids"]
            )
            for record in records[start : start + batch_size]
        ]
        longest = max(map(len, prompts))
        device = next(model.parameters()).device
        input_ids = torch.tensor(
            [[pad] * (longest - len(ids)) + ids for ids in prompts], device=device
        )
        attention_mask = torch.tensor(
            [[0] * (longest - len(ids)) + [1] * len(ids) for ids in prompts], device=device
        )
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad,
            )
        answers += [
            tokenizer.decode(row[longest:], skip_special_tokens=True).strip() for row in output
        ]
    return answers


def evaluate(base_model, adapter_dir, record_sets: dict, *, with_loss: bool) -> dict:
    """Mean token F1 (and, with_loss, the reference answers' loss) per record set, from one
    fresh copy of the base model with the adapter merged into it."""
    from retrain.evaluation.metrics import EVALUATION_MAX_LENGTH, eval_loss, token_f1
    from retrain.training.lora import load_base_model, sft_examples, training_device

    tokenizer, model = load_base_model(base_model, device=training_device())
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    model.eval()
    scores = {}
    for name, records in record_sets.items():
        answers = greedy_answers(model, tokenizer, records)
        f1 = sum(map(token_f1, answers, [r.chosen for r in records])) / len(records)
        loss = (
            eval_loss(
                model=model,
                tokenizer=tokenizer,
                conversations=sft_examples(records),
                max_length=EVALUATION_MAX_LENGTH,
            )
            if with_loss
            else None
        )
        scores[name] = (f1, loss)
    return scores


def parameters_for(learning_rate: float, steps: int, *, seed: int, checkpoint_every: int):
    from retrain.training.lora import TrainingParameters

    return TrainingParameters(
        learning_rate=learning_rate,
        max_steps=steps,
        batch_size=BATCH_SIZE,
        max_length=MAX_LENGTH,
        seed=seed,
        checkpoint_every_steps=checkpoint_every,
    )


def train_separately(*, base_model, records, rate_text, steps_list, seed, workdir, say):
    """One lora_train run per step count; yields (steps, adapter_dir, train_loss, seconds)."""
    from retrain.training.lora import lora_train

    for steps in steps_list:
        output_dir = workdir / f"lr{rate_text}-steps{steps}"
        started = time.perf_counter()
        result = lora_train(
            base_model_path=base_model,
            records=records,
            parameters=parameters_for(float(rate_text), steps, seed=seed, checkpoint_every=10**7),
            output_dir=output_dir,
            on_step=step_reporter(say, f"lr {rate_text}"),
        )
        yield steps, result.adapter_dir, result.train_loss, time.perf_counter() - started


def train_once(*, base_model, records, rate_text, steps_list, seed, workdir, say):
    """One lora_train run to the largest step count; the checkpoints it writes on the way are
    kept at the wanted step counts. Yields as train_separately, the seconds up to that step."""
    from retrain.training.lora import ADAPTER_DIRNAME, CHECKPOINT_DIRNAME, lora_train

    output_dir = workdir / f"lr{rate_text}"
    wanted = set(steps_list[:-1])
    every = 0
    for steps in steps_list:
        every = gcd(every, steps)
    kept: dict[int, Path] = {}
    losses: list[float] = []
    seconds_at: dict[int, float] = {}
    started = time.perf_counter()

    def keep_checkpoint() -> bool:  # asked before every step, after the last checkpoint
        progress = output_dir / CHECKPOINT_DIRNAME / "progress.json"
        if progress.exists():
            step = json.loads(progress.read_text())["step"]
            if step in wanted and step not in kept:
                kept[step] = output_dir / f"kept-{step}"
                shutil.copytree(output_dir / CHECKPOINT_DIRNAME / ADAPTER_DIRNAME, kept[step])
        return False

    report = step_reporter(say, f"lr {rate_text}")

    def on_step(step: int, total: int, loss: float, tokens_trained: int) -> None:
        losses.append(loss)
        seconds_at[step] = time.perf_counter() - started
        report(step, total, loss)

    result = lora_train(
        base_model_path=base_model,
        records=records,
        parameters=parameters_for(
            float(rate_text), steps_list[-1], seed=seed, checkpoint_every=every
        ),
        output_dir=output_dir,
        on_step=on_step,
        should_stop=keep_checkpoint,
    )
    kept[steps_list[-1]] = result.adapter_dir
    for steps in steps_list:
        yield steps, kept[steps], sum(losses[:steps]) / steps, seconds_at[steps]


def step_reporter(say, label: str):
    def report(step: int, total: int, loss: float, tokens_trained: int = 0) -> None:
        if step == 1 or step % 5 == 0 or step == total:
            say(f"{label}: step {step}/{total}, loss {loss:.3f}")

    return report


def number_list(text: str, kind):
    try:
        return [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path("demo/flywheel-bench"),
        help="a benchmark folder: corpus/ and questions.jsonl",
    )
    parser.add_argument(
        "--steps", default="0,10,20,40", help="step counts to measure; 0 is the base model"
    )
    parser.add_argument("--learning-rates", default="3e-4,1e-3,3e-3")
    parser.add_argument(
        "--seed", type=int, default=0, help="of the contexts' draws and of training"
    )
    parser.add_argument(
        "--run-per-step-count",
        action="store_true",
        help="a training run per step count (max_steps = steps, as the loop "
        "trains) instead of the checkpoints of one run per learning rate",
    )
    parser.add_argument(
        "--loss",
        action="store_true",
        help="also the reference answers' loss (about 40%% more evaluation time)",
    )
    args = parser.parse_args()
    try:
        steps_all = sorted(set(number_list(args.steps, int)))
        rate_texts = [text.strip() for text in args.learning_rates.split(",") if text.strip()]
        number_list(args.learning_rates, float)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if not steps_all or steps_all[0] < 0:
        parser.error("--steps: step counts of 0 or more")
    trained_steps = [steps for steps in steps_all if steps > 0]

    wall_started, say = started_clock()
    django_setup_without_database()
    import peft
    import torch
    import transformers
    from transformers import AutoTokenizer

    from bench.loop.questions import question_set_load
    from flywheel.ml.bundled import base_model_path
    from retrain.training.lora import TrainingParameters, _chat_token_ids, training_device

    torch.set_num_threads(1)
    base_model = base_model_path()
    defaults = TrainingParameters()

    questions = question_set_load(path=args.corpus / "questions.jsonl")
    documents = corpus_passages(args.corpus / "corpus")
    raft = RaftBuilder(documents, seed=args.seed)
    train_records = [raft.record(question=q, text=q.question, variant=0) for q in questions.train]
    record_sets = {
        "paraphrases": [
            raft.record(question=q, text=text, variant=variant)
            for q in questions.train
            for variant, text in enumerate(q.paraphrases, start=1)
        ],
        "held-out": [
            raft.record(question=q, text=q.question, variant=0) for q in questions.heldout
        ],
    }
    if not all(record_sets.values()):
        raise SystemExit(
            "the question file needs paraphrases of training questions and held-out questions"
        )

    tokenizer = AutoTokenizer.from_pretrained(str(base_model), local_files_only=True)
    lengths = [
        len(
            _chat_token_ids(
                tokenizer,
                [*r.prompt, {"role": "assistant", "content": r.chosen}],
                add_generation_prompt=False,
            )
        )
        for r in train_records
    ]
    cut = sum(length > MAX_LENGTH for length in lengths)
    lines = [
        "LoRA training curve: paraphrase and held-out token F1 by learning rate and steps",
        f"{_cpu_model()}, {os.cpu_count()} cores, {_memory_gib():.0f} GiB RAM, Python "
        f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} "
        f"thread), transformers {transformers.__version__}, peft {peft.__version__}, device "
        f"{training_device()}, load average {os.getloadavg()[0]:.1f} at start",
        f"Base model {base_model.name}; corpus {args.corpus}: {len(documents)} documents, "
        f"{sum(map(len, documents.values()))} passages; {len(train_records)} training "
        f"questions, {len(record_sets['paraphrases'])} of their paraphrases, "
        f"{len(record_sets['held-out'])} held-out questions; each reads its answer passage among "
        f"{DISTRACTORS} distractors (seed {args.seed}).",
        f"Training: lora_train, batch {BATCH_SIZE}, max_length {MAX_LENGTH}, r {defaults.r}, "
        f"alpha {defaults.lora_alpha}, dropout {defaults.lora_dropout}, learning rate decaying "
        f"linearly to 0 over max_steps, seed {args.seed}; "
        + (
            "a run per step count (max_steps = steps)."
            if args.run_per_step_count
            else "one run per learning rate to the largest step count, its checkpoints scored "
            "on the way (their learning rate has not decayed as a run of that many steps' would)."
        )
        + f" Answers: greedy, at most {MAX_NEW_TOKENS} new tokens.",
        f"Training examples are {min(lengths)} to {max(lengths)} tokens (mean "
        f"{sum(lengths) / len(lengths):.0f}); {cut} of {len(lengths)} exceed max_length "
        f"{MAX_LENGTH} and are trained without the start of their prompt (evaluation reads "
        "whole prompts).",
    ]
    for line in lines:
        say(line)

    def measure(rate_text, steps, adapter_dir, train_loss, train_seconds) -> None:
        label = "base model" if adapter_dir is None else f"lr {rate_text}, {steps} steps"
        started = time.perf_counter()
        scores = evaluate(base_model, adapter_dir, record_sets, with_loss=args.loss)
        (paraphrase_f1, paraphrase_loss), (heldout_f1, heldout_loss) = scores.values()
        seconds = time.perf_counter() - started
        say(
            f"{label}: paraphrase F1 {paraphrase_f1:.3f}, held-out F1 {heldout_f1:.3f} "
            f"({seconds:.0f} s)"
        )
        measurements.append(
            Measurement(
                rate_text,
                steps,
                paraphrase_f1,
                heldout_f1,
                paraphrase_loss,
                heldout_loss,
                train_loss,
                train_seconds,
                seconds,
            )
        )

    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="bench-lora-curve-") as workdir:
        if 0 in steps_all:
            measure("-", 0, None, None, 0.0)
        train = train_separately if args.run_per_step_count else train_once
        for rate_text in rate_texts if trained_steps else []:
            for steps, adapter_dir, train_loss, train_seconds in train(
                base_model=base_model,
                records=train_records,
                rate_text=rate_text,
                steps_list=trained_steps,
                seed=args.seed,
                workdir=Path(workdir),
                say=say,
            ):
                measure(rate_text, steps, adapter_dir, train_loss, train_seconds)

    def figure(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    headers = ["learning rate", "steps", "paraphrase F1", "held-out F1"]
    if args.loss:
        headers += ["paraphrase loss", "held-out loss"]
    headers += ["train loss", "train s", "eval s"]
    rows = []
    for m in measurements:
        row = [m.learning_rate, m.steps, figure(m.paraphrase_f1), figure(m.heldout_f1)]
        if args.loss:
            row += [figure(m.paraphrase_loss), figure(m.heldout_loss)]
        row += [figure(m.train_loss), f"{m.train_seconds:.0f}", f"{m.eval_seconds:.0f}"]
        rows.append(row)
    print("\n".join(lines))
    print()
    print(table(headers, rows))
    print()
    print(
        "F1: mean token F1 of the greedy answers against the references"
        + ("; loss: of the reference answers, per token" if args.loss else "")
        + "; train loss: the mean of the run's loss curve up to that step; train s: wall-clock "
        "seconds of lora_train up to that step, model loading included; eval s: both sets."
    )
    base = next((m for m in measurements if m.steps == 0), None)
    if base is not None:
        allowed = [m for m in measurements if m.heldout_f1 >= base.heldout_f1 - HELDOUT_TOLERANCE]
        # The best paraphrase F1; on a tie, fewer steps, then the lower learning rate.
        best = max(
            allowed,
            key=lambda m: (
                round(m.paraphrase_f1, 6),
                -m.steps,
                -float(m.learning_rate) if m.steps else 0.0,
            ),
        )
        if best.steps == 0:
            print(
                "Best: the base model (0 steps): no trained setting raised paraphrase F1 "
                f"without losing more than {HELDOUT_TOLERANCE} held-out F1."
            )
        else:
            print(
                f"Best: {best.steps} steps at learning rate {best.learning_rate}: paraphrase F1 "
                f"{best.paraphrase_f1:.3f} (base {base.paraphrase_f1:.3f}), held-out F1 "
                f"{best.heldout_f1:.3f} (base {base.heldout_f1:.3f}; at most "
                f"{HELDOUT_TOLERANCE} lower allowed)."
            )
    print(f"Wall time: {time.perf_counter() - wall_started:.0f} s")


if __name__ == "__main__":
    main()
