"""LoRA fine-tuning of the generator on a dataset version's SFT records.

A plain PyTorch loop around a peft LoRA model: AdamW on the adapter's weights, a linear
schedule with warmup, batches padded to their longest sequence, and a loss on the assistant's
answer only (the prompt, with its retrieved context, is what the model reads, not what it
should learn to write). The loop checkpoints as it goes and resumes from its checkpoint, so a
worker that dies or a job that is stopped loses at most `checkpoint_every_steps` steps, and a
resumed run ends exactly where an uninterrupted one would have.

The serving model (flywheel.ml.loading) is never trained: every run loads a fresh copy of the
base model from its folder.
"""

import hashlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import torch

IGNORED_LABEL = -100  # what torch's cross-entropy skips
CHECKPOINT_DIRNAME = "checkpoint"
ADAPTER_DIRNAME = "adapter"
ADAPTER_METADATA_FILENAME = "flywheel-adapter.json"
STAGING_PREFIX = ".staging-"
PREVIOUS_SUFFIX = ".previous"
# As transformers' Trainer does by default: one unlucky batch cannot throw the adapter off.
MAX_GRADIENT_NORM = 1.0


@dataclass(frozen=True)
class TrainingParameters:
    r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None  # when set, wins over epochs
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every_steps: int = 20

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list):  # as JSON brings it
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        _check_integer("r", self.r, minimum=1, maximum=1024)
        _check_integer("lora_alpha", self.lora_alpha, minimum=1, maximum=4096)
        _check_number("lora_dropout", self.lora_dropout, minimum=0, below=1)
        if (
            not isinstance(self.target_modules, tuple)
            or not self.target_modules
            or not all(isinstance(name, str) and name for name in self.target_modules)
        ):
            raise ValueError("target_modules: must be a non-empty list of module names")
        _check_number("learning_rate", self.learning_rate, minimum=0, maximum=1, exclusive=True)
        _check_number("epochs", self.epochs, minimum=0, maximum=1000, exclusive=True)
        if self.max_steps is not None:
            _check_integer("max_steps", self.max_steps, minimum=1, maximum=10**7)
        _check_integer("batch_size", self.batch_size, minimum=1, maximum=1024)
        _check_integer(
            "gradient_accumulation_steps", self.gradient_accumulation_steps, minimum=1, maximum=1024
        )
        _check_integer("max_length", self.max_length, minimum=16, maximum=32768)
        _check_number("warmup_ratio", self.warmup_ratio, minimum=0, maximum=1)
        _check_number("weight_decay", self.weight_decay, minimum=0, maximum=10)
        _check_integer("seed", self.seed, minimum=0, maximum=2**32 - 1)
        _check_integer(
            "checkpoint_every_steps", self.checkpoint_every_steps, minimum=1, maximum=10**7
        )

    @classmethod
    def from_dict(cls, values: dict) -> "TrainingParameters":
        """Parameters from JSON-like values; a missing key takes its default. An unknown key
        or a bad value is a ValueError whose message starts with the field's name."""
        known = {parameter.name for parameter in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: not a training parameter")
        return cls(**values)

    def as_dict(self) -> dict:
        """JSON-ready; from_dict(as_dict()) gives the same parameters back."""
        values = asdict(self)
        values["target_modules"] = list(self.target_modules)
        return values


def _check_integer(name: str, value, *, minimum: int, maximum: int) -> None:
    # bool is an int to Python, never to someone writing `"r": true`.
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"{name}: must be an integer from {minimum} to {maximum}")


def _check_number(
    name: str,
    value,
    *,
    minimum: float,
    maximum: float | None = None,
    below: float | None = None,
    exclusive: bool = False,
) -> None:
    """`exclusive`: the minimum itself is not allowed; `below`: an exclusive maximum."""
    valid = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value > minimum if exclusive else value >= minimum)
        and (maximum is None or value <= maximum)
        and (below is None or value < below)
    )
    if not valid:
        low = f"more than {minimum}" if exclusive else f"at least {minimum}"
        high = f"below {below}" if below is not None else f"at most {maximum}"
        raise ValueError(f"{name}: must be a number {low} and {high}")


@dataclass
class TrainingResult:
    adapter_dir: Path
    steps: int
    epochs_completed: float
    train_loss: float  # the mean of the loss curve
    loss_curve: list[dict]  # [{"step": n, "loss": x}], the whole run's, resumed parts included
    tokens_trained: int  # non-padding tokens fed through forward and backward, whole run
    tokens_per_second: float  # of this call's training loop (loading excluded)
    resumed_from_step: int | None
    device: str


class TrainingStopped(Exception):
    """should_stop() asked for a stop; the checkpoint to resume from is written."""

    def __init__(self, step: int):
        super().__init__(f"training stopped at step {step}; the checkpoint can resume it")
        self.step = step


def sft_examples(records: Iterable) -> list[list[dict]]:
    """Full chat conversations: each record's prompt messages, then `chosen` as the assistant's
    answer. Anything with `prompt` and `chosen` will do; callers pick the kind and split."""
    return [[*record.prompt, {"role": "assistant", "content": record.chosen}] for record in records]


def _chat_token_ids(tokenizer, messages: list[dict], *, add_generation_prompt: bool) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"])


def _common_prefix_length(first: list[int], second: list[int]) -> int:
    length = 0
    for left, right in zip(first, second, strict=False):
        if left != right:
            break
        length += 1
    return length


def tokenize_for_sft(tokenizer, conversations: list[list[dict]], max_length: int) -> list[dict]:
    """input_ids, attention_mask and labels per conversation, in the tokenizer's chat template.

    Labels are IGNORED_LABEL everywhere but the final assistant answer and its end-of-turn
    token. The answer starts where the prompt rendered with the generation prompt stops; what
    the template writes after the end-of-turn token (a newline) is not the model's to learn.
    A conversation longer than `max_length` loses the start of its prompt, so that the answer
    survives; one whose answer alone does not fit is left out.
    """
    examples = []
    for conversation in conversations:
        prompt_ids = _chat_token_ids(tokenizer, conversation[:-1], add_generation_prompt=True)
        full_ids = _chat_token_ids(tokenizer, conversation, add_generation_prompt=False)
        answer_start = _common_prefix_length(prompt_ids, full_ids)
        answer_end = len(full_ids)
        while answer_end > answer_start and not tokenizer.decode(full_ids[answer_end - 1]).strip():
            answer_end -= 1
        # At least one prompt token must stay: the first answer token is predicted from it.
        if answer_end == answer_start or len(full_ids) - answer_start >= max_length:
            continue
        prompt_kept = min(answer_start, max_length - (len(full_ids) - answer_start))
        input_ids = full_ids[answer_start - prompt_kept :]
        answer_offset = prompt_kept
        answer_length = answer_end - answer_start
        labels = (
            [IGNORED_LABEL] * answer_offset
            + input_ids[answer_offset : answer_offset + answer_length]
            + [IGNORED_LABEL] * (len(input_ids) - answer_offset - answer_length)
        )
        examples.append(
            {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}
        )
    return examples


def pad_batch(examples: list[dict], *, pad_token_id: int, device) -> dict[str, torch.Tensor]:
    """Tensors padded on the right to the batch's longest sequence."""
    longest = max(len(example["input_ids"]) for example in examples)

    def padded(key: str, value: int) -> torch.Tensor:
        rows = [example[key] + [value] * (longest - len(example[key])) for example in examples]
        return torch.tensor(rows, dtype=torch.long, device=device)

    return {
        "input_ids": padded("input_ids", pad_token_id),
        "attention_mask": padded("attention_mask", 0),
        "labels": padded("labels", IGNORED_LABEL),
    }


def answer_loss_sum(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """The summed cross-entropy over the batch's answer tokens, and how many there are.

    Logits are computed only from the first position that predicts an answer token on: the
    vocabulary projection of the prompt positions before it would be thrown away, and with a
    long retrieved context it is a good share of the work.
    """
    labels = batch["labels"]
    predicts_answer = (labels[:, 1:] != IGNORED_LABEL).any(dim=0)
    first_position = int(predicts_answer.nonzero()[0])
    positions = torch.arange(first_position, labels.shape[1] - 1, device=labels.device)
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        logits_to_keep=positions,
        use_cache=False,
    ).logits
    targets = labels[:, first_position + 1 :]
    loss_sum = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORED_LABEL,
        reduction="sum",
    )
    return loss_sum, int((targets != IGNORED_LABEL).sum())


def training_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_base_model(base_model_path: Path | str, *, device: torch.device):
    """A fresh tokenizer and model from the folder; never the serving process' cached one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(base_model_path), local_files_only=True)
    return tokenizer, model.to(device)


def pad_token_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@dataclass
class _Schedule:
    """Which batches make which optimizer step: epoch after epoch, each in its own order."""

    example_count: int
    batch_size: int
    accumulation: int
    seed: int
    batches_per_epoch: int = field(init=False)
    steps_per_epoch: int = field(init=False)
    _orders: dict[int, list[list[int]]] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.batches_per_epoch = math.ceil(self.example_count / self.batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / self.accumulation)

    def total_steps(self, parameters: TrainingParameters) -> int:
        if parameters.max_steps is not None:
            return parameters.max_steps
        return max(1, math.ceil(parameters.epochs * self.steps_per_epoch))

    def batches(self, epoch: int) -> list[list[int]]:
        """Example indices per batch; the order depends on the seed and the epoch only, so a
        resumed run sees the data exactly as the interrupted one would have."""
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.example_count, generator=generator).tolist()
            self._orders[epoch] = [
                order[start : start + self.batch_size]
                for start in range(0, self.example_count, self.batch_size)
            ]
        return self._orders[epoch]


@dataclass
class _Progress:
    """Where the run is; what a checkpoint records besides the weights and optimizer."""

    step: int = 0
    epoch: int = 0
    next_batch: int = 0  # of `epoch`
    tokens_trained: int = 0
    loss_curve: list[dict] = field(default_factory=list)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


def _fingerprint(examples: list[dict], parameters: TrainingParameters) -> str:
    """A checkpoint resumes only the run that wrote it: same data, same parameters."""
    digest = hashlib.sha256(json.dumps(parameters.as_dict(), sort_keys=True).encode())
    for example in examples:
        digest.update(json.dumps([example["input_ids"], example["labels"]]).encode())
    return digest.hexdigest()


def _replace_directory(staging: Path, target: Path) -> None:
    """Put the complete `staging` folder in the place of `target`. The old folder moves aside
    first, so at every moment one complete folder exists: `target` or `target.previous`."""
    previous = target.with_name(target.name + PREVIOUS_SUFFIX)
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    shutil.rmtree(previous, ignore_errors=True)


def _existing_checkpoint(output_dir: Path) -> Path | None:
    for candidate in (CHECKPOINT_DIRNAME, CHECKPOINT_DIRNAME + PREVIOUS_SUFFIX):
        if (output_dir / candidate / "progress.json").exists():
            return output_dir / candidate
    return None


def _rng_states() -> dict:
    # LoRA dropout draws from torch's generators; the data order has a generator of its own.
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _rng_states_restore(states: dict) -> None:
    torch.set_rng_state(states["cpu"])
    if torch.cuda.is_available() and "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def _checkpoint_write(
    output_dir: Path, *, model, optimizer, scheduler, progress: _Progress, fingerprint: str
) -> None:
    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=STAGING_PREFIX))
    model.save_pretrained(staging / ADAPTER_DIRNAME)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_states(),
        },
        staging / "training_state.pt",
    )
    (staging / "progress.json").write_text(
        json.dumps({"fingerprint": fingerprint, **asdict(progress)})
    )
    _replace_directory(staging, output_dir / CHECKPOINT_DIRNAME)


def _checkpoint_restore(checkpoint: Path, *, model, optimizer, scheduler) -> _Progress:
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    device = next(model.parameters()).device
    set_peft_model_state_dict(
        model, load_peft_weights(str(checkpoint / ADAPTER_DIRNAME), device=str(device))
    )
    state = torch.load(checkpoint / "training_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _rng_states_restore(state["rng"])
    recorded = json.loads((checkpoint / "progress.json").read_text())
    recorded.pop("fingerprint")
    return _Progress(**recorded)


def _checkpoint_fingerprint(checkpoint: Path) -> str:
    return json.loads((checkpoint / "progress.json").read_text())["fingerprint"]


def _adapter_write(
    output_dir: Path, *, model, metadata: dict, progress: _Progress, summary: dict
) -> Path:
    import peft
    import transformers

    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=STAGING_PREFIX))
    model.save_pretrained(staging)
    facts = {
        **summary,
        "started_at": progress.started_at,
        "finished_at": datetime.now(UTC).isoformat(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "loss_curve": progress.loss_curve,
    }
    # The caller's additions (dataset, job) go in; the run's own facts are not overridden.
    (staging / ADAPTER_METADATA_FILENAME).write_text(
        json.dumps({**metadata, **facts}, indent=2, default=str)
    )
    adapter_dir = output_dir / ADAPTER_DIRNAME
    _replace_directory(staging, adapter_dir)
    return adapter_dir


def lora_train(
    *,
    base_model_path: Path | str,
    records: Iterable,
    parameters: TrainingParameters,
    output_dir: Path,
    on_step: Callable[[int, int, float, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
    metadata: dict | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> TrainingResult:
    """Train a LoRA adapter on `records` (prompt + chosen) and save it to output_dir/adapter.

    Resumes from output_dir/checkpoint when one of the same run (data and parameters) is
    there. `on_step(step, total_steps, loss, tokens_trained)` follows every optimizer step;
    `should_stop()` is asked before each one and between the batches a step accumulates, and
    True writes the checkpoint of the last whole step and raises TrainingStopped.
    `on_checkpoint(folder)` follows every checkpoint written (to keep it off the machine).
    """
    from peft import LoraConfig, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    say = log or (lambda message: None)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for leftover in output_dir.glob(STAGING_PREFIX + "*"):  # of a process that died mid-write
        shutil.rmtree(leftover, ignore_errors=True)

    device = training_device()
    tokenizer, base_model = load_base_model(base_model_path, device=device)
    conversations = sft_examples(records)
    examples = tokenize_for_sft(tokenizer, conversations, parameters.max_length)
    if not examples:
        raise ValueError(
            f"none of the {len(conversations)} examples has an answer that fits in "
            f"max_length={parameters.max_length} tokens"
        )
    schedule = _Schedule(
        example_count=len(examples),
        batch_size=parameters.batch_size,
        accumulation=parameters.gradient_accumulation_steps,
        seed=parameters.seed,
    )
    total_steps = schedule.total_steps(parameters)
    fingerprint = _fingerprint(examples, parameters)

    torch.manual_seed(parameters.seed)  # the LoRA weights' initialisation and dropout
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
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=parameters.learning_rate, weight_decay=parameters.weight_decay
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer,
        num_warmup_steps=math.ceil(parameters.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    say(
        f"Training on {len(examples)} examples ({len(conversations) - len(examples)} left out: "
        f"answer longer than {parameters.max_length} tokens), {total_steps} steps of "
        f"{parameters.batch_size * parameters.gradient_accumulation_steps} examples, on {device}"
    )

    progress = _Progress()
    resumed_from_step = None
    checkpoint = _existing_checkpoint(output_dir)
    if checkpoint is not None and _checkpoint_fingerprint(checkpoint) != fingerprint:
        say("The checkpoint there is of other data or parameters: starting over")
        checkpoint = None
    if checkpoint is not None:
        progress = _checkpoint_restore(
            checkpoint, model=model, optimizer=optimizer, scheduler=scheduler
        )
        resumed_from_step = progress.step
        say(f"Resuming from the checkpoint at step {progress.step}")

    def checkpoint_write() -> None:
        _checkpoint_write(
            output_dir,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            progress=progress,
            fingerprint=fingerprint,
        )
        if on_checkpoint is not None:
            on_checkpoint(output_dir / CHECKPOINT_DIRNAME)

    pad_token_id = pad_token_id_of(tokenizer)
    model.train()
    session_tokens = 0
    session_started = time.perf_counter()
    while progress.step < total_steps:
        if should_stop is not None and should_stop():
            checkpoint_write()
            say(f"Stopped at step {progress.step}; checkpoint saved")
            raise TrainingStopped(progress.step)
        epoch_batches = schedule.batches(progress.epoch)
        step_batches = [
            [examples[index] for index in batch]
            for batch in epoch_batches[
                progress.next_batch : progress.next_batch + parameters.gradient_accumulation_steps
            ]
        ]
        # Every answer token of the step weighs the same, however the batches split them.
        answer_tokens = sum(
            label != IGNORED_LABEL
            for batch in step_batches
            for example in batch
            for label in example["labels"]
        )
        optimizer.zero_grad(set_to_none=True)
        step_loss_sum = 0.0
        for batch_number, batch_examples in enumerate(step_batches):
            # A step of many accumulated batches can take minutes on a CPU: a cancel is
            # noticed between them too. The half-accumulated gradient is dropped; the
            # checkpoint holds the last whole step.
            if batch_number and should_stop is not None and should_stop():
                checkpoint_write()
                say(f"Stopped during step {progress.step + 1}; checkpoint saved")
                raise TrainingStopped(progress.step)
            batch = pad_batch(batch_examples, pad_token_id=pad_token_id, device=device)
            loss_sum, _ = answer_loss_sum(model, batch)
            (loss_sum / answer_tokens).backward()
            step_loss_sum += loss_sum.item()
            batch_tokens = sum(len(example["input_ids"]) for example in batch_examples)
            session_tokens += batch_tokens
            progress.tokens_trained += batch_tokens
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRADIENT_NORM)
        optimizer.step()
        scheduler.step()

        progress.step += 1
        progress.next_batch += len(step_batches)
        if progress.next_batch >= schedule.batches_per_epoch:
            progress.epoch, progress.next_batch = progress.epoch + 1, 0
        loss = step_loss_sum / answer_tokens
        progress.loss_curve.append({"step": progress.step, "loss": loss})
        if on_step is not None:
            on_step(progress.step, total_steps, loss, progress.tokens_trained)
        if progress.step % parameters.checkpoint_every_steps == 0 and progress.step < total_steps:
            checkpoint_write()
            say(f"Step {progress.step}/{total_steps}, loss {loss:.4f}: checkpoint saved")
    elapsed = time.perf_counter() - session_started

    train_loss = sum(point["loss"] for point in progress.loss_curve) / len(progress.loss_curve)
    epochs_completed = progress.epoch + progress.next_batch / schedule.batches_per_epoch
    summary = {
        "base_model_path": str(base_model_path),
        "parameters": parameters.as_dict(),
        "steps": progress.step,
        "epochs_completed": epochs_completed,
        "train_loss": train_loss,
        "examples": len(examples),
        "tokens_trained": progress.tokens_trained,
        "resumed_from_step": resumed_from_step,
        "device": str(device),
    }
    adapter_dir = _adapter_write(
        output_dir, model=model, metadata=metadata or {}, progress=progress, summary=summary
    )
    for leftover in (CHECKPOINT_DIRNAME, CHECKPOINT_DIRNAME + PREVIOUS_SUFFIX):
        shutil.rmtree(output_dir / leftover, ignore_errors=True)
    say(f"Adapter saved to {adapter_dir}: {progress.step} steps, train loss {train_loss:.4f}")
    return TrainingResult(
        adapter_dir=adapter_dir,
        steps=progress.step,
        epochs_completed=epochs_completed,
        train_loss=train_loss,
        loss_curve=progress.loss_curve,
        tokens_trained=progress.tokens_trained,
        tokens_per_second=session_tokens / elapsed if session_tokens else 0.0,
        resumed_from_step=resumed_from_step,
        device=str(device),
    )
