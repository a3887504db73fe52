"""LoRA training with the real base model on a tiny dataset of facts it cannot know: the loss
falls, the adapter loads and generates, and a stopped run resumes to the same result."""

import json

import pytest

from flywheel.ml.bundled import base_model_path
from retrain.evaluation.metrics import evaluate_model
from retrain.models import DatasetRecord, DatasetVersion
from retrain.training.lora import TrainingParameters, TrainingStopped, lora_train, training_device
from tests.factories import FACTS, ProjectFactory, conversation_prompt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Few, short steps at a learning rate high enough that they show.
FAST = {"learning_rate": 1e-3, "batch_size": 2, "max_length": 256, "r": 8}


@pytest.fixture
def records(db) -> list[DatasetRecord]:
    project = ProjectFactory()
    version = DatasetVersion.objects.create(
        project=project,
        number=1,
        content_hash="0" * 64,
        policy={},
        counts={"train": len(FACTS)},
        stats={},
        diff={},
        trigger=DatasetVersion.Trigger.COMMAND,
    )
    return DatasetRecord.objects.bulk_create(
        [
            DatasetRecord(
                dataset_version=version,
                kind=DatasetRecord.Kind.SFT,
                split="train",
                prompt=conversation_prompt(question),
                chosen=answer,
                signal="reviewer_correction",
                content_hash=f"{number:064d}",
            )
            for number, (question, answer) in enumerate(FACTS)
        ]
    )


def test_parameters_round_trip_through_json_and_bad_ones_name_their_field():
    parameters = TrainingParameters(r=16, target_modules=("q_proj", "v_proj"), max_steps=30)

    assert TrainingParameters.from_dict(json.loads(json.dumps(parameters.as_dict()))) == parameters
    assert TrainingParameters.from_dict({}) == TrainingParameters()
    for bad in (
        {"r": 0},
        {"r": True},
        {"learning_rate": "fast"},
        {"lora_dropout": 1.0},
        {"max_steps": 2.5},
        {"target_modules": []},
        {"epochs": 0},
    ):
        with pytest.raises(ValueError, match=f"^{next(iter(bad))}: "):
            TrainingParameters.from_dict(bad)
    with pytest.raises(ValueError, match=r"^learning_rat: not a training parameter"):
        TrainingParameters.from_dict({"learning_rat": 1e-4})


@pytest.mark.django_db
def test_training_lowers_the_loss_and_the_adapter_loads_and_generates(records, tmp_path):
    steps_seen = []

    result = lora_train(
        base_model_path=base_model_path(),
        records=records,
        parameters=TrainingParameters(max_steps=12, **FAST),
        output_dir=tmp_path / "run",
        on_step=lambda step, total, loss, tokens: steps_seen.append((step, total)),
        metadata={"dataset_version": 1, "dataset_hash": "0" * 64},
    )
    base = evaluate_model(
        base_model_path=base_model_path(),
        adapter_dir=None,
        records=records,
        max_new_tokens=16,
        max_examples=3,
    )
    trained = evaluate_model(
        base_model_path=base_model_path(),
        adapter_dir=result.adapter_dir,
        records=records,
        max_new_tokens=16,
        max_examples=3,
    )

    assert steps_seen == [(step, 12) for step in range(1, 13)]
    assert result.steps == 12 and result.resumed_from_step is None
    assert result.device == str(training_device())
    assert result.epochs_completed == 3.0  # 8 examples in batches of 2: 4 steps an epoch
    assert result.tokens_trained > 0 and result.tokens_per_second > 0
    assert trained.eval_loss < base.eval_loss * 0.85, (trained.eval_loss, base.eval_loss)
    assert trained.token_f1 > base.token_f1
    assert all(sample["prediction"] for sample in trained.samples)
    assert [sample["reference"] for sample in trained.samples] == [a for _, a in FACTS[:3]]
    metadata = json.loads((result.adapter_dir / "flywheel-adapter.json").read_text())
    assert metadata["dataset_hash"] == "0" * 64 and metadata["steps"] == 12
    assert metadata["base_model_path"] == str(base_model_path())
    assert metadata["parameters"]["learning_rate"] == 1e-3
    assert metadata["train_loss"] == pytest.approx(result.train_loss)
    assert metadata["started_at"] <= metadata["finished_at"]
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["adapter"]


@pytest.mark.django_db
def test_a_stopped_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(
    records, tmp_path
):

    parameters = TrainingParameters(max_steps=6, checkpoint_every_steps=2, **FAST)
    uninterrupted = lora_train(
        base_model_path=base_model_path(),
        records=records,
        parameters=parameters,
        output_dir=tmp_path / "uninterrupted",
    )
    completed_steps = []

    with pytest.raises(TrainingStopped):
        lora_train(
            base_model_path=base_model_path(),
            records=records,
            parameters=parameters,
            output_dir=tmp_path / "interrupted",
            on_step=lambda step, total, loss, tokens: completed_steps.append(step),
            should_stop=lambda: len(completed_steps) >= 4,
        )
    checkpoint = tmp_path / "interrupted" / "checkpoint"
    assert json.loads((checkpoint / "progress.json").read_text())["step"] == 4
    assert (checkpoint / "adapter" / "adapter_model.safetensors").exists()
    resumed = lora_train(
        base_model_path=base_model_path(),
        records=records,
        parameters=parameters,
        output_dir=tmp_path / "interrupted",
    )

    assert resumed.resumed_from_step == 4 and resumed.steps == 6
    assert [point["step"] for point in resumed.loss_curve] == [1, 2, 3, 4, 5, 6]
    # Same seed, same data order, optimizer and random state restored: the same losses.
    assert [point["loss"] for point in resumed.loss_curve] == pytest.approx(
        [point["loss"] for point in uninterrupted.loss_curve], rel=1e-4
    )
    assert resumed.train_loss == pytest.approx(uninterrupted.train_loss, rel=1e-4)
    assert resumed.tokens_trained == uninterrupted.tokens_trained
    assert not checkpoint.exists()


@pytest.mark.django_db
def test_a_checkpoint_of_other_parameters_is_not_resumed(records, tmp_path):
    messages = []
    with pytest.raises(TrainingStopped):
        lora_train(
            base_model_path=base_model_path(),
            records=records,
            parameters=TrainingParameters(max_steps=1, **FAST),
            output_dir=tmp_path,
            should_stop=lambda: True,
        )
    assert (tmp_path / "checkpoint").exists()

    result = lora_train(
        base_model_path=base_model_path(),
        records=records,
        parameters=TrainingParameters(max_steps=1, seed=1, **FAST),
        output_dir=tmp_path,
        log=messages.append,
    )

    assert result.resumed_from_step is None and result.steps == 1
    assert any("starting over" in message for message in messages)


@pytest.mark.django_db
def test_a_cancel_is_noticed_between_the_batches_of_one_step(records, tmp_path):
    asked = []

    def should_stop() -> bool:
        asked.append(True)
        return len(asked) == 2  # the first ask is before step 1, the second after its batch 1

    with pytest.raises(TrainingStopped) as stopped:
        lora_train(
            base_model_path=base_model_path(),
            records=records,
            parameters=TrainingParameters(
                max_steps=2, **{**FAST, "batch_size": 1, "gradient_accumulation_steps": 3}
            ),
            output_dir=tmp_path,
            should_stop=should_stop,
        )

    assert stopped.value.step == 0, "stopped inside step 1, before it completed"
    assert len(asked) == 2
    progress = json.loads((tmp_path / "checkpoint" / "progress.json").read_text())
    assert progress["step"] == 0 and progress["next_batch"] == 0
