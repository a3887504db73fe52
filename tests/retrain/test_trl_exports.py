"""Exports that train unmodified: every format, as JSON lines and as Parquet, loads with
`datasets` (Parquet with the features it declares), and TRL's SFTTrainer and DPOTrainer each
take a step on them as downloaded."""

import math

import datasets
import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from peft import LoraConfig
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from feedback.services.ratings import rating_submit
from feedback.services.reviews import review_submit
from flywheel.ml.bundled import base_model_path
from flywheel.models import ApiKey
from flywheel.services import api_key_create
from retrain.datasets.exports import EXPORT_FORMATS, FILE_TYPES
from retrain.datasets.snapshot import dataset_snapshot
from tests.conftest import bearer, user_with_role
from tests.factories import ProjectFactory, curate, served

MESSAGES = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
TEXT = datasets.Value("string")
DECLARED_FEATURES = {
    "chat": datasets.Features({"messages": MESSAGES}),
    "prompt_completion": datasets.Features({"prompt": MESSAGES, "completion": MESSAGES}),
    "dpo": datasets.Features({"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES}),
    "alpaca": datasets.Features(
        {"instruction": TEXT, "input": TEXT, "output": TEXT, "system": TEXT}
    ),
}
LOADERS = {"jsonl": "json", "parquet": "parquet"}
# Long enough for our system prompt, the served passage, the question and the answer, so
# that truncation never leaves an example without the tokens it is trained on.
MAX_LENGTH = 256


@pytest.fixture
def exported(db, client, tmp_path):
    """Every export of a small curated dataset version, downloaded through the API into
    files: {(format, file type): path}. Three instruction examples (a reviewer's correction,
    an end user's correction, a thumbs-up answer); the two corrections are also preference
    pairs against the answers they replaced."""
    project = ProjectFactory()
    reviewer = get_user_model().objects.create_user(username="reviewer", password="x")
    corrected = served(project, "What does Canopy cost?", "It is free.")
    user_fix = served(project, "Which shortcut searches notes?", "Ctrl+F.")
    liked = served(project, "Can I work offline?", "Yes, every device keeps a full copy.")
    review_submit(
        interaction=corrected,
        reviewer=reviewer,
        decision="corrected",
        ideal_answer="Canopy costs 9 euros per user per month.",
    )
    rating_submit(
        interaction=user_fix,
        rater_id="u",
        source="api",
        thumb="down",
        correction="Ctrl+K searches every note.",
    )
    rating_submit(interaction=liked, rater_id="u", source="widget", thumb="up")
    curate(project, corrected, user_fix, liked)
    version, _ = dataset_snapshot(project=project, trigger="command")
    key = api_key_create(
        project=project, kind="secret", name="trainer", scopes=ApiKey.Scope.values
    ).raw_key

    files = {}
    for export_format in EXPORT_FORMATS:
        for file_type in FILE_TYPES:
            response = client.get(
                f"/api/v1/datasets/{version.pk}/export",
                {"format": export_format, "split": "all", "file": file_type},
                **bearer(key),
            )
            assert response.status_code == 200, response.content
            path = tmp_path / f"{export_format}.{file_type}"
            path.write_bytes(b"".join(response.streaming_content))
            assert response["Content-Disposition"].endswith(f'-{export_format}-all.{file_type}"')
            files[export_format, file_type] = path
    return files


def _load(path, tmp_path) -> datasets.Dataset:
    return datasets.load_dataset(
        LOADERS[path.suffix.lstrip(".")],
        data_files=str(path),
        split="train",
        cache_dir=str(tmp_path / "datasets-cache"),
    )


def test_every_export_loads_as_json_lines_and_as_parquet_with_its_declared_features(
    exported, tmp_path
):
    loaded = {key: _load(path, tmp_path) for key, path in exported.items()}

    for export_format in EXPORT_FORMATS:
        as_parquet = loaded[export_format, "parquet"]
        assert as_parquet.features == DECLARED_FEATURES[export_format], export_format
        assert as_parquet.to_list() == loaded[export_format, "jsonl"].to_list(), export_format
    assert len(loaded["chat", "parquet"]) == len(loaded["alpaca", "parquet"]) == 3
    assert len(loaded["dpo", "parquet"]) == 2
    for chat, split_at_answer in zip(
        loaded["chat", "parquet"], loaded["prompt_completion", "parquet"], strict=True
    ):
        assert chat["messages"] == split_at_answer["prompt"] + split_at_answer["completion"]
        assert [m["role"] for m in split_at_answer["prompt"]] == ["system", "user"]
        assert [m["role"] for m in split_at_answer["completion"]] == ["assistant"]
    pairs = {
        (row["chosen"][0]["content"], row["rejected"][0]["content"])
        for row in loaded["dpo", "parquet"]
    }
    assert pairs == {
        ("Canopy costs 9 euros per user per month.", "It is free."),
        ("Ctrl+K searches every note.", "Ctrl+F."),
    }


def _one_step(trainer) -> float:
    trainer.train()
    [step] = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 1
    return step["loss"]


def test_trl_trainers_take_a_step_on_the_exports_as_downloaded(
    exported, tmp_path, one_torch_thread
):
    model = str(base_model_path())
    common = {
        "max_steps": 1,
        "per_device_train_batch_size": 1,
        "max_length": MAX_LENGTH,
        "use_cpu": True,
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "no",
    }
    # LoRA, as the project trains: DPO then needs no second copy of the model as reference.
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    losses = {}
    for export_format in ("chat", "prompt_completion"):
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(output_dir=str(tmp_path / export_format), **common),
            train_dataset=_load(exported[export_format, "parquet"], tmp_path),
            peft_config=lora,
        )
        losses[export_format] = _one_step(trainer)
    trainer = DPOTrainer(
        model=model,
        args=DPOConfig(output_dir=str(tmp_path / "dpo"), **common),
        train_dataset=_load(exported["dpo", "parquet"], tmp_path),
        peft_config=lora,
    )
    losses["dpo"] = _one_step(trainer)

    assert all(math.isfinite(loss) and loss > 0 for loss in losses.values()), losses


@pytest.mark.django_db
def test_the_dashboard_downloads_parquet_and_the_api_refuses_an_unknown_file_type(client):
    project = ProjectFactory()
    liked = served(project, "Can I work offline?", "Yes, every device keeps a full copy.")
    rating_submit(interaction=liked, rater_id="u", source="widget", thumb="up")
    curate(project, liked)
    version, _ = dataset_snapshot(project=project, trigger="command")
    key = api_key_create(
        project=project, kind="secret", name="ci", scopes=ApiKey.Scope.values
    ).raw_key
    client.force_login(user_with_role(project, "viewer"))
    detail_url = reverse("dashboard:dataset_detail", args=[project.slug, version.number])
    download_url = reverse(
        "dashboard:dataset_download",
        args=[project.slug, version.number, "prompt_completion", "all"],
    )
    no_pairs_url = reverse(
        "dashboard:dataset_download", args=[project.slug, version.number, "dpo", "all"]
    )

    page = client.get(detail_url).content.decode()
    parquet = client.get(download_url, {"file": "parquet"})
    no_pairs = client.get(no_pairs_url, {"file": "parquet"})
    unknown = client.get(f"/api/v1/datasets/{version.pk}/export", {"file": "csv"}, **bearer(key))

    assert f'href="{download_url}?file=parquet"' in page
    assert "Alpaca (not a TRL format)" in page
    assert parquet.status_code == 200
    assert parquet["Content-Type"] == "application/vnd.apache.parquet"
    assert b"".join(parquet.streaming_content).startswith(b"PAR1")
    assert no_pairs.status_code == 404, "a split without rows has no file"
    assert unknown.status_code == 400
