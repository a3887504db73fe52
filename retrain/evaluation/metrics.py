"""How good a model version is on held-out examples, and how well an index finds sources.

A model is scored three ways on the same records: the loss of the reference answers (how
likely the model finds them; needs no generation), and the greedy answer it generates against
the reference by token F1 and ROUGE-L (SQuAD-style normalisation for both). Every answer is kept
with its scores, so two models can be compared question by question.
"""

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from flywheel.messages import last_user_message
from retrain.training.lora import (
    answer_loss_sum,
    load_base_model,
    pad_batch,
    pad_token_id_of,
    sft_examples,
    tokenize_for_sft,
    training_device,
)

ARTICLES = re.compile(r"\b(a|an|the)\b")
SAMPLE_COUNT = 5
# Long enough for a prompt with its retrieved passages; longer prompts lose their start.
EVALUATION_MAX_LENGTH = 1024


def _normalised_tokens(text: str) -> list[str]:
    """SQuAD's normalisation: lowercase, punctuation (any Unicode punctuation) and articles
    removed, split on whitespace."""
    text = "".join(
        character
        for character in text.lower()
        if not unicodedata.category(character).startswith("P")
    )
    return ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, reference: str) -> float:
    """The F1 of the two bags of normalised tokens; two empty texts agree fully."""
    predicted, expected = _normalised_tokens(prediction), _normalised_tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _longest_common_subsequence(first: list[str], second: list[str]) -> int:
    previous = [0] * (len(second) + 1)
    for item in first:
        current = [0]
        for column, other in enumerate(second, start=1):
            current.append(
                previous[column - 1] + 1
                if item == other
                else max(previous[column], current[column - 1])
            )
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (precision and recall weighed equally) on normalised tokens."""
    predicted, expected = _normalised_tokens(prediction), _normalised_tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    common = _longest_common_subsequence(predicted, expected)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def eval_loss(
    *, model, tokenizer, conversations: list[list[dict]], max_length: int = 512, batch_size: int = 4
) -> float:
    """The mean loss per answer token over the conversations' final assistant answers."""
    examples = tokenize_for_sft(tokenizer, conversations, max_length)
    if not examples:
        raise ValueError(f"no conversation has an answer that fits in {max_length} tokens")
    # Batches of similar lengths waste less on padding; the token-weighted mean is the same.
    examples.sort(key=lambda example: len(example["input_ids"]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, answer_tokens = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                batch = pad_batch(
                    examples[start : start + batch_size],
                    pad_token_id=pad_token_id_of(tokenizer),
                    device=device,
                )
                batch_loss_sum, batch_tokens = answer_loss_sum(model, batch)
                loss_sum += batch_loss_sum.item()
                answer_tokens += batch_tokens
    finally:
        model.train(was_training)
    return loss_sum / answer_tokens


@dataclass
class ModelEvaluation:
    eval_loss: float
    token_f1: float
    rouge_l: float
    examples: int
    # One per record, in order: {question, reference, prediction, token_f1, rouge_l}.
    answers: list[dict]

    @property
    def samples(self) -> list[dict]:
        return self.answers[:SAMPLE_COUNT]

    def as_dict(self) -> dict:
        return asdict(self)


def _greedy_answer(model, tokenizer, prompt: list[dict], *, max_new_tokens: int) -> str:
    inputs = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(next(model.parameters()).device)
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        # Silence the sampling defaults of the model's generation config.
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=pad_token_id_of(tokenizer),
    )
    new_tokens = output[0][inputs["input_ids"].shape[1] :]
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def evaluate_model(
    *,
    base_model_path: Path | str,
    adapter_dir: Path | str | None,
    records: Iterable,
    max_new_tokens: int = 64,
    max_examples: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ModelEvaluation:
    """Score a fresh copy of the base model (with the adapter, when given) on `records`
    (anything with `prompt` messages and a `chosen` reference answer).

    on_progress(done, total) follows the loss pass (done 0) and every generated answer.
    """
    from peft import PeftModel

    records = list(records)[:max_examples] if max_examples is not None else list(records)
    if not records:
        raise ValueError("nothing to evaluate: no records")
    tokenizer, model = load_base_model(base_model_path, device=training_device())
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()

    loss = eval_loss(
        model=model,
        tokenizer=tokenizer,
        conversations=sft_examples(records),
        max_length=EVALUATION_MAX_LENGTH,
    )
    if on_progress is not None:
        on_progress(0, len(records))
    answers = []
    with torch.inference_mode():
        for done, record in enumerate(records, start=1):
            prediction = _greedy_answer(
                model, tokenizer, record.prompt, max_new_tokens=max_new_tokens
            )
            answers.append(
                {
                    "question": last_user_message(record.prompt),
                    "reference": record.chosen,
                    "prediction": prediction,
                    "token_f1": token_f1(prediction, record.chosen),
                    "rouge_l": rouge_l(prediction, record.chosen),
                }
            )
            if on_progress is not None:
                on_progress(done, len(records))
    return ModelEvaluation(
        eval_loss=loss,
        token_f1=sum(answer["token_f1"] for answer in answers) / len(answers),
        rouge_l=sum(answer["rouge_l"] for answer in answers) / len(answers),
        examples=len(records),
        answers=answers,
    )


def retrieval_hit_at_k(*, project, index_version, questions: list[dict], k: int = 5) -> dict:
    """How often a question's source document is the first retrieved, and among the first k.

    questions: [{"question": text, "source": a document's source_uri}].
    """
    from flywheel.selectors.retrieval import RetrievalOptions, retrieve

    if not questions:
        raise ValueError("no questions to evaluate retrieval with")
    first_hits = top_k_hits = 0
    for item in questions:
        result = retrieve(
            project=project,
            query=item["question"],
            options=RetrievalOptions(top_k=k),
            index_version=index_version,
        )
        sources = [chunk.source_uri for chunk in result.chunks]
        first_hits += sources[:1] == [item["source"]]
        top_k_hits += item["source"] in sources
    return {
        "hit@1": first_hits / len(questions),
        "hit@k": top_k_hits / len(questions),
        "k": k,
        "questions": len(questions),
    }
