"""Evaluation: answer scores on known cases, the loss on answer tokens only (with the real base
model and its chat template), and retrieval hit rates against a real index."""

import pytest
import torch

from flywheel.ml.bundled import base_model_path
from flywheel.models import IndexVersion
from retrain.evaluation.metrics import eval_loss, retrieval_hit_at_k, rouge_l, token_f1
from retrain.training.lora import IGNORED_LABEL, load_base_model, tokenize_for_sft
from tests.conftest import index_folder

# An autouse fixture: imported, it applies to this module as well.
from tests.factories import FACTS, LABELLED_SET, conversation_prompt

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base_model():
    """(tokenizer, model), loaded once for the module: these tests only read it."""
    return load_base_model(base_model_path(), device=torch.device("cpu"))


def conversation(question: str, answer: str) -> list[dict]:
    return [*conversation_prompt(question), {"role": "assistant", "content": answer}]


@pytest.mark.parametrize(
    "prediction, reference, f1, rouge",
    [
        ("The cat sat on the mat.", "the CAT sat on a mat", 1.0, 1.0),
        ("dogs bark", "the cat sat", 0.0, 0.0),
        ("", "", 1.0, 1.0),
        ("", "the cat sat", 0.0, 0.0),
        # cat sat | cat sat on mat: precision 1, recall 1/2
        ("a cat sat", "the cat sat on the mat", 2 / 3, 2 / 3),
        # The same bag of words; in order, only "cat sat" (or "on mat") is common.
        ("on mat, cat sat", "The cat sat on the mat", 1.0, 0.5),
        # refunds take 14 days | refunds within 14 days: 3 of 4 either way, and in order
        ("Refunds take 14 days!", "Refunds within 14 days.", 0.75, 0.75),
    ],
)
def test_token_f1_and_rouge_l_on_known_cases(prediction, reference, f1, rouge):
    assert token_f1(prediction, reference) == pytest.approx(f1)
    assert rouge_l(prediction, reference) == pytest.approx(rouge)


def test_only_the_answer_and_its_end_of_turn_token_are_trained(base_model):
    tokenizer, _ = base_model
    question, answer = FACTS[0]

    (example,) = tokenize_for_sft(tokenizer, [conversation(question, answer)], max_length=256)

    trained = [label for label in example["labels"] if label != IGNORED_LABEL]
    assert tokenizer.decode(trained) == answer + tokenizer.eos_token
    text = tokenizer.decode(example["input_ids"])
    assert text.startswith("<|im_start|>system\n" + conversation_prompt(question)[0]["content"])
    assert text.endswith(f"<|im_start|>assistant\n{answer}<|im_end|>\n")
    assert len(example["labels"]) == len(example["input_ids"]) == len(example["attention_mask"])


def test_a_long_prompt_loses_its_start_and_a_long_answer_its_example(base_model):
    tokenizer, _ = base_model
    question, answer = FACTS[1]
    long_prompt = [
        {"role": "system", "content": "Context: " + "lorem ipsum " * 200},
        {"role": "user", "content": question},
    ]
    long_answer = conversation(question, "very " * 100 + "long.")

    truncated, *others = tokenize_for_sft(
        tokenizer,
        [[*long_prompt, {"role": "assistant", "content": answer}], long_answer],
        max_length=64,
    )

    assert others == []
    assert len(truncated["input_ids"]) == 64
    trained = [label for label in truncated["labels"] if label != IGNORED_LABEL]
    assert tokenizer.decode(trained) == answer + tokenizer.eos_token
    assert tokenizer.decode(truncated["input_ids"]).endswith(
        question + f"<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"
    )


def test_eval_loss_is_the_models_own_loss_on_answer_tokens_whatever_the_padding(base_model):
    tokenizer, model = base_model
    conversations = [conversation(question, answer) for question, answer in FACTS[:4]]
    (first,) = tokenize_for_sft(tokenizer, conversations[:1], max_length=256)
    with torch.no_grad():
        own_loss = model(
            input_ids=torch.tensor([first["input_ids"]]), labels=torch.tensor([first["labels"]])
        ).loss.item()

    single = eval_loss(model=model, tokenizer=tokenizer, conversations=conversations[:1])
    one_by_one = eval_loss(
        model=model, tokenizer=tokenizer, conversations=conversations, batch_size=1
    )
    padded = eval_loss(model=model, tokenizer=tokenizer, conversations=conversations, batch_size=4)

    assert single == pytest.approx(own_loss, rel=1e-4)
    assert padded == pytest.approx(one_by_one, rel=1e-4)
    assert not model.training


@pytest.mark.django_db
def test_retrieval_hit_rates_count_the_first_and_the_top_k_results(project):
    index_folder(project, LABELLED_SET)
    version = IndexVersion.objects.get(project=project)
    questions = [
        {"question": "How much does Grove cost?", "source": "plans.md"},
        {"question": "How much does Grove cost?", "source": "not-indexed.md"},
    ]
    everything = version.chunks.count()

    top_two = retrieval_hit_at_k(project=project, index_version=version, questions=questions, k=2)
    all_chunks = retrieval_hit_at_k(
        project=project, index_version=version, questions=questions[:1], k=everything
    )

    assert top_two == {"hit@1": 0.5, "hit@k": 0.5, "k": 2, "questions": 2}
    assert all_chunks["hit@k"] == 1.0
    with pytest.raises(ValueError):
        retrieval_hit_at_k(project=project, index_version=version, questions=[])
