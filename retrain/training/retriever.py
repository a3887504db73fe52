"""Fine-tuning of the embedding model (the retriever) on (question, passage) pairs.

Feedback yields pairs: a question and the passage that answered it (the passage a well-rated
answer used, or the document passage a reviewer cited), often with hard negatives (passages
that were retrieved for the question but did not help). The model is trained with
sentence-transformers' `MultipleNegativesRankingLoss`: for each question its passage must score
above every other passage of the batch (in-batch negatives) and above its hard negatives (extra
columns). Batches never hold the same text twice (`NO_DUPLICATES`), so that a passage that
answers one question of the batch is never scored as a wrong passage for the same question.

Pure and free of the database: callers hand in pairs and folders. `retrieval_hits` measures a
model folder on held-out pairs, so that a candidate can be compared with the serving model.

Training uses `SentenceTransformerTrainer`, which needs the `datasets` and `accelerate` packages;
they are imported when training starts.
"""

import hashlib
import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

METADATA_FILENAME = "flywheel_retriever.json"
METADATA_FORMAT = 1
STAGING_PREFIX = ".staging-"
# Each hard-negative column costs one more encoding per pair and step; the first (hardest)
# few carry almost all of the signal.
MAX_HARD_NEGATIVE_COLUMNS = 3
# MultipleNegativesRankingLoss's default: cosine similarities are multiplied by it.
LOSS_SCALE = 20.0
ENCODE_BATCH_SIZE = 64


class RetrieverTrainingStopped(Exception):
    """`should_stop()` asked the run to stop; nothing was written to the output folder."""

    def __init__(self, step: int, total: int) -> None:
        super().__init__(f"retriever training stopped at step {step} of {total}")
        self.step = step
        self.total = total


@dataclass(frozen=True)
class RetrieverPair:
    question: str
    positive: str
    negatives: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("question", "positive"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name}: must be a non-empty string")
        negatives = self.negatives
        if isinstance(negatives, str) or not isinstance(negatives, Iterable):
            raise ValueError("negatives: must be a list of passages")
        negatives = tuple(negatives)
        if not all(isinstance(text, str) for text in negatives):
            raise ValueError("negatives: must contain only strings")
        # A negative that is the positive itself (or empty, or repeated) would only confuse
        # the loss; keep the order, which is usually the retriever's ranking.
        cleaned = tuple(
            dict.fromkeys(text for text in negatives if text.strip() and text != self.positive)
        )
        object.__setattr__(self, "negatives", cleaned)


def _check_integer(name: str, value: object, *, minimum: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name}: must be between {minimum} and {maximum}, got {value}")


def _check_number(
    name: str,
    value: object,
    *,
    minimum: float,
    maximum: float,
    exclude_minimum: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a number, got {value!r}")
    too_small = value <= minimum if exclude_minimum else value < minimum
    if too_small or value > maximum:
        low = "above" if exclude_minimum else "at least"
        raise ValueError(f"{name}: must be {low} {minimum} and at most {maximum}, got {value}")


@dataclass
class RetrieverTrainingParameters:
    # Measured with the bundled MiniLM on tens of pairs. demo/flywheel-bench (30 questions,
    # 53 passages), paraphrases held out, hit@1 from 0.55: 2e-5 x 4 epochs 0.55, 5e-5 x 4
    # 0.75, 5e-5 x 8 or 1e-4 x 4 0.85-0.90 but unseen questions fell from 0.90 to 0.80.
    # 5e-5 x 4 learns within a few steps and leaves the unseen questions where they were.
    epochs: float = 4.0
    max_steps: int = 0  # 0: as many steps as `epochs` makes; otherwise wins over epochs
    batch_size: int = 16
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        _check_number("epochs", self.epochs, minimum=0, maximum=1000, exclude_minimum=True)
        _check_integer("max_steps", self.max_steps, minimum=0, maximum=10**7)
        _check_integer("batch_size", self.batch_size, minimum=2, maximum=4096)
        _check_number(
            "learning_rate", self.learning_rate, minimum=0, maximum=1, exclude_minimum=True
        )
        _check_number("warmup_ratio", self.warmup_ratio, minimum=0, maximum=1)
        if self.warmup_ratio >= 1:
            raise ValueError(f"warmup_ratio: must be below 1, got {self.warmup_ratio}")
        _check_integer("seed", self.seed, minimum=0, maximum=2**32 - 1)

    @classmethod
    def from_dict(cls, values: dict | None) -> "RetrieverTrainingParameters":
        values = dict(values or {})
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown retriever training parameter")
        return cls(**values)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RetrieverTrainingResult:
    output_dir: Path
    steps: int
    epochs: float  # completed, fractional
    pairs_given: int
    pairs_used: int  # after merging repeated (question, positive) pairs
    pairs_with_hard_negatives: int
    hard_negative_columns: int
    train_loss: float | None  # mean over the run
    first_loss: float | None
    last_loss: float | None
    seconds: float
    device: str

    def as_dict(self) -> dict:
        values = asdict(self)
        values["output_dir"] = str(self.output_dir)
        return values


def _merged_pairs(pairs: Sequence[RetrieverPair]) -> list[RetrieverPair]:
    """One pair per (question, positive), the negatives of its repeats appended in order."""
    merged: dict[tuple[str, str], list[str]] = {}
    for pair in pairs:
        if not isinstance(pair, RetrieverPair):
            raise ValueError(f"pairs: expected RetrieverPair items, got {type(pair).__name__}")
        merged.setdefault((pair.question, pair.positive), []).extend(pair.negatives)
    return [
        RetrieverPair(question=question, positive=positive, negatives=tuple(negatives))
        for (question, positive), negatives in merged.items()
    ]


def _training_rows(pairs: list[RetrieverPair], *, seed: int) -> tuple[dict[str, list[str]], int]:
    """The dataset's columns: anchor, positive and a fixed number of negative columns.

    The loss needs as many negatives on every row. A pair with fewer hard negatives than the
    columns repeats its own; a pair with none gets other pairs' passages, drawn with the seed,
    which is what in-batch negatives give it anyway.
    """
    columns = min(MAX_HARD_NEGATIVE_COLUMNS, max(len(pair.negatives) for pair in pairs))
    passages = sorted({pair.positive for pair in pairs})
    if columns and len(passages) < 2 and any(not pair.negatives for pair in pairs):
        columns = 0
    rng = random.Random(seed)
    rows: dict[str, list[str]] = {"anchor": [], "positive": []}
    rows.update({f"negative_{index + 1}": [] for index in range(columns)})
    for pair in pairs:
        rows["anchor"].append(pair.question)
        rows["positive"].append(pair.positive)
        if not columns:
            continue
        if pair.negatives:
            chosen = [pair.negatives[index % len(pair.negatives)] for index in range(columns)]
        else:
            others = [text for text in passages if text != pair.positive]
            chosen = rng.sample(others, k=min(columns, len(others)))
            chosen = [chosen[index % len(chosen)] for index in range(columns)]
        for index, text in enumerate(chosen):
            rows[f"negative_{index + 1}"].append(text)
    return rows, columns


def _load_model(path: Path, *, device: str | None = None):
    from sentence_transformers import SentenceTransformer

    if not Path(path).is_dir():
        raise FileNotFoundError(f"embedding model folder {path} does not exist")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return SentenceTransformer(str(path), device=device, local_files_only=True)


def _warmup_argument(ratio: float) -> dict:
    # transformers 5 takes the ratio as a float `warmup_steps` below 1 and deprecates
    # `warmup_ratio`; transformers 4 only understands `warmup_ratio`.
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"warmup_steps": float(ratio)}
    return {"warmup_ratio": float(ratio)}


def retriever_train(
    *,
    pairs: list[RetrieverPair],
    base_model_path: Path,
    output_dir: Path,
    parameters: RetrieverTrainingParameters,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RetrieverTrainingResult:
    """Fine-tune the model in `base_model_path` and save it, complete, to `output_dir`.

    `progress(step, total, loss)` is called after every optimiser step. When `should_stop()`
    turns true (checked before loading and after every step) the run ends and
    `RetrieverTrainingStopped` is raised; `output_dir` is then left as it was. The folder is
    written beside its place and renamed into it, replacing an earlier one.
    """
    if not isinstance(parameters, RetrieverTrainingParameters):
        raise ValueError("parameters: must be RetrieverTrainingParameters")
    if not pairs:
        raise ValueError("pairs: at least one pair is needed to train")
    used = _merged_pairs(pairs)
    if len(used) < 2:
        raise ValueError("pairs: at least two distinct (question, passage) pairs are needed")
    base_model_path = Path(base_model_path)
    output_dir = Path(output_dir)
    if should_stop is not None and should_stop():
        raise RetrieverTrainingStopped(0, 0)

    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    try:  # sentence-transformers 6 moved them; the old paths still work there, deprecated
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss
        from sentence_transformers.training_args import BatchSamplers
    from transformers import TrainerCallback, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    started = time.monotonic()
    set_seed(parameters.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _load_model(base_model_path, device=device)
    rows, negative_columns = _training_rows(used, seed=parameters.seed)
    dataset = Dataset.from_dict(rows)
    loss = MultipleNegativesRankingLoss(model, scale=LOSS_SCALE)

    losses: list[float] = []
    state = {"stopped": False, "step": 0, "total": 0}

    class _Reporter(TrainerCallback):
        def on_train_begin(self, args, trainer_state, control, **kwargs):
            state["total"] = trainer_state.max_steps

        def on_step_end(self, args, trainer_state, control, **kwargs):
            state["step"] = trainer_state.global_step
            if should_stop is not None and should_stop():
                state["stopped"] = True
                control.should_training_stop = True
            return control

        def on_log(self, args, trainer_state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                value = float(logs["loss"])
                losses.append(value)
                if progress is not None:
                    progress(trainer_state.global_step, trainer_state.max_steps, value)

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir.parent, prefix=STAGING_PREFIX) as scratch:
        arguments = SentenceTransformerTrainingArguments(
            output_dir=str(Path(scratch) / "trainer"),
            num_train_epochs=float(parameters.epochs),
            max_steps=parameters.max_steps or -1,
            per_device_train_batch_size=parameters.batch_size,
            learning_rate=parameters.learning_rate,
            **_warmup_argument(parameters.warmup_ratio),
            weight_decay=0.0,
            lr_scheduler_type="linear",
            seed=parameters.seed,
            data_seed=parameters.seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="steps",
            logging_steps=1,
            report_to="none",
            disable_tqdm=True,
            use_cpu=device == "cpu",
            dataloader_pin_memory=device != "cpu",
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=arguments,
            train_dataset=dataset,
            loss=loss,
            callbacks=[_Reporter()],
        )
        # The reporter replaces transformers' printing of every log line.
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        # The model card would copy training rows (feedback text) into the folder's README.
        for callback in list(trainer.callback_handler.callbacks):
            if type(callback).__name__.endswith("ModelCardCallback"):
                trainer.remove_callback(callback)
        outcome = trainer.train()
        if state["stopped"]:
            raise RetrieverTrainingStopped(state["step"], state["total"])

        steps = trainer.state.global_step
        train_loss = outcome.training_loss if losses else None
        result = RetrieverTrainingResult(
            output_dir=output_dir,
            steps=steps,
            epochs=round(float(trainer.state.epoch or 0.0), 4),
            pairs_given=len(pairs),
            pairs_used=len(used),
            pairs_with_hard_negatives=sum(1 for pair in used if pair.negatives),
            hard_negative_columns=negative_columns,
            train_loss=float(train_loss) if train_loss is not None else None,
            first_loss=losses[0] if losses else None,
            last_loss=losses[-1] if losses else None,
            seconds=round(time.monotonic() - started, 3),
            device=device,
        )
        staging = Path(scratch) / "model"
        model.save(str(staging), create_model_card=False)
        metadata = {
            "format": METADATA_FORMAT,
            "kind": "retriever",
            "base_model_path": str(base_model_path),
            "parameters": parameters.as_dict(),
            "pairs": {
                "given": result.pairs_given,
                "used": result.pairs_used,
                "with_hard_negatives": result.pairs_with_hard_negatives,
                "hard_negative_columns": result.hard_negative_columns,
            },
            "result": {
                key: value
                for key, value in result.as_dict().items()
                if key not in {"output_dir", "pairs_given", "pairs_used"}
            },
            "created_at": datetime.now(UTC).isoformat(),
        }
        (staging / METADATA_FILENAME).write_text(json.dumps(metadata, indent=2) + "\n")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    return result


def retrieval_hits(
    *,
    model_path: Path,
    pairs: list[RetrieverPair],
    corpus: list[str],
    depths: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """The share of `pairs` whose positive passage ranks within the top k of `corpus`.

    Passages and questions are embedded with the model in `model_path`, normalised, and the
    corpus is ranked by cosine for each question (repeated corpus texts count once). Returns
    `{"hit@1": ..., "hit@5": ..., "n": len(pairs)}`. Every positive must be in the corpus.
    """
    depths = tuple(depths)
    if not depths or not all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in depths
    ):
        raise ValueError("depths: must be positive integers")
    passages = list(dict.fromkeys(corpus))
    if not pairs:
        return {**{f"hit@{k}": 0.0 for k in depths}, "n": 0}
    position = {text: index for index, text in enumerate(passages)}
    missing = sum(1 for pair in pairs if pair.positive not in position)
    if missing:
        raise ValueError(f"corpus: {missing} of {len(pairs)} positive passages are not in it")

    model = _load_model(Path(model_path))
    passage_vectors = model.encode(
        passages, batch_size=ENCODE_BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True
    )
    question_vectors = model.encode(
        [pair.question for pair in pairs],
        batch_size=ENCODE_BATCH_SIZE,
        normalize_embeddings=True,
        convert_to_numpy=True,
    )
    scores = (
        np.asarray(question_vectors, dtype=np.float32)
        @ np.asarray(passage_vectors, dtype=np.float32).T
    )
    targets = np.array([position[pair.positive] for pair in pairs])
    target_scores = scores[np.arange(len(pairs)), targets]
    # Rank of the positive, 1-based; a tie counts against it, so that a model that maps
    # everything to one point cannot score.
    ranks = 1 + (scores > target_scores[:, None]).sum(axis=1)
    ranks += (scores == target_scores[:, None]).sum(axis=1) - 1
    result: dict[str, float] = {f"hit@{k}": float(np.mean(ranks <= k)) for k in depths}
    result["n"] = len(pairs)
    return result


def _question_key(question: str) -> str:
    return " ".join(question.casefold().split())


def pairs_split(
    pairs: Sequence[RetrieverPair], *, eval_fraction: float, seed: int
) -> tuple[list[RetrieverPair], list[RetrieverPair]]:
    """Split into (train, eval) by question: all pairs of a question land on the same side.

    Questions (compared ignoring case and spacing) are ordered by a hash of the seed and the
    question, and the first `eval_fraction` of them go to eval: the same data and seed always
    split alike, and a question keeps its side when others are added more often than not.
    With at least two questions and a fraction above zero, each side gets at least one.
    Both lists keep the input order.
    """
    _check_number("eval_fraction", eval_fraction, minimum=0, maximum=1)
    if eval_fraction >= 1:
        raise ValueError("eval_fraction: must be below 1, got 1")
    _check_integer("seed", seed, minimum=0, maximum=2**63 - 1)
    questions = list(dict.fromkeys(_question_key(pair.question) for pair in pairs))
    count = round(len(questions) * eval_fraction)
    if eval_fraction > 0 and len(questions) >= 2:
        count = min(max(count, 1), len(questions) - 1)

    def order(question: str) -> str:
        return hashlib.sha256(f"{seed}\x00{question}".encode()).hexdigest()

    held_out = set(sorted(questions, key=order)[:count])
    train = [pair for pair in pairs if _question_key(pair.question) not in held_out]
    evaluation = [pair for pair in pairs if _question_key(pair.question) in held_out]
    return train, evaluation
