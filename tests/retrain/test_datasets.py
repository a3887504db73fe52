"""Dataset versions: immutable, content-hashed snapshots; exports that `datasets` loads in
the shapes TRL's SFT and DPO trainers take."""

import json

import datasets
import pytest
from django.contrib.auth import get_user_model

from feedback.services.ratings import rating_submit
from feedback.services.reviews import review_submit
from retrain.datasets.exports import dataset_export_lines
from retrain.datasets.snapshot import dataset_snapshot
from retrain.models import DatasetRecord
from tests.conftest import bearer
from tests.factories import ProjectFactory, curate, served


@pytest.fixture
def rated_project(db):
    """Six clusters: corrections, approvals, thumbs, and a thumbs-down twin of a good answer."""
    project = ProjectFactory()
    reviewer = get_user_model().objects.create_user(username="r", password="x")
    up = served(project, "How do I share a shelf?", "Use the shelf menu, then Share.")
    down_twin = served(project, "How can I share a shelf?", "You cannot share shelves.")
    corrected = served(project, "What does Canopy cost?", "It is free.")
    approved = served(project, "How long are deleted notes kept?", "30 days in the bin.")
    user_fix = served(project, "Which shortcut searches notes?", "Ctrl+F.")
    scored = served(project, "Can I work offline?", "Yes, every device keeps a full copy.")
    rating_submit(interaction=up, rater_id="u", source="widget", thumb="up")
    rating_submit(interaction=down_twin, rater_id="u", source="widget", thumb="down")
    review_submit(
        interaction=corrected,
        reviewer=reviewer,
        decision="corrected",
        ideal_answer="Canopy costs 9 euros per user per month.",
    )
    review_submit(interaction=approved, reviewer=reviewer, decision="approved")
    rating_submit(
        interaction=user_fix,
        rater_id="u",
        source="api",
        thumb="down",
        correction="Ctrl+K searches every note.",
    )
    rating_submit(interaction=scored, rater_id="u", source="api", score=5)
    curate(project, up, down_twin, corrected, approved, user_fix, scored)
    return project


@pytest.mark.django_db
def test_a_snapshot_freezes_examples_with_counts_stats_and_the_policy(rated_project):
    version, created = dataset_snapshot(project=rated_project, trigger="command")

    assert created and version.number == 1
    assert version.counts["train"] + version.counts["eval"] == 5
    assert version.counts["preference_train"] + version.counts["preference_eval"] == 3
    assert version.stats["signals"]["reviewer_correction"] == 1
    assert version.stats["signals"]["preferred_vs_thumbs_down"] == 1
    assert version.stats["answer_chars"]["count"] == 5
    assert version.policy["near_duplicate_threshold"] == 0.8
    assert version.diff == {
        "previous_version": None,
        "added": 5,
        "removed": 0,
        "unchanged": 0,
        "added_examples": version.diff["added_examples"],
        "removed_examples": [],
    }


@pytest.mark.django_db
def test_an_unchanged_snapshot_returns_the_existing_version_and_changes_make_a_new_one(
    rated_project,
):
    first, _ = dataset_snapshot(project=rated_project, trigger="command")
    same, created_again = dataset_snapshot(project=rated_project, trigger="schedule")
    frozen = list(first.records.values_list("content_hash", "chosen"))

    new_interaction = served(rated_project, "How do I export a shelf?", "Shelf menu > Export.")
    rating_submit(interaction=new_interaction, rater_id="u", source="api", thumb="up")
    curate(rated_project, new_interaction)
    second, created = dataset_snapshot(project=rated_project, trigger="command")

    assert same == first and not created_again
    assert created and second.number == 2 and second.previous == first
    assert (second.diff["added"], second.diff["removed"]) == (1, 0)
    assert second.diff["previous_version"] == 1
    assert list(first.records.values_list("content_hash", "chosen")) == frozen


def _export(tmp_path, version, export_format, split):
    path = tmp_path / f"{export_format}-{split}.jsonl"
    path.write_text(
        "".join(dataset_export_lines(version=version, export_format=export_format, split=split))
    )
    return datasets.load_dataset("json", data_files=str(path), split="train")


@pytest.mark.django_db
def test_exports_load_with_datasets_in_the_shapes_trl_trainers_take(rated_project, tmp_path):
    version, _ = dataset_snapshot(project=rated_project, trigger="command")

    chat = _export(tmp_path, version, "chat", "all")
    alpaca = _export(tmp_path, version, "alpaca", "all")
    dpo = _export(tmp_path, version, "dpo", "all")

    assert len(chat) == len(alpaca) == 5 and len(dpo) == 3
    assert chat.column_names == ["messages"]
    for messages in chat["messages"]:
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert set(alpaca.column_names) == {"instruction", "input", "output"}
    assert "Refunds within 14 days." in alpaca[0]["input"]
    assert set(dpo.column_names) == {"prompt", "chosen", "rejected"}
    for row in dpo:
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    pairs = {(row["chosen"][0]["content"], row["rejected"][0]["content"]) for row in dpo}
    assert ("Canopy costs 9 euros per user per month.", "It is free.") in pairs
    assert ("Use the shelf menu, then Share.", "You cannot share shelves.") in pairs
    train = _export(tmp_path, version, "chat", "train")
    held_out = version.records.filter(kind=DatasetRecord.Kind.SFT, split="eval").count()
    assert len(train) == 5 - held_out


@pytest.mark.django_db
def test_the_dataset_api_snapshots_lists_and_downloads(client, rated_project):
    from flywheel.services import api_key_create

    key = api_key_create(project=rated_project, kind="secret", name="ci").raw_key

    created = client.post("/api/v1/datasets", **bearer(key))
    unchanged = client.post("/api/v1/datasets", **bearer(key))
    version_id = created.json()["dataset_version"]["id"]
    listed = client.get("/api/v1/datasets", **bearer(key)).json()
    download = client.get(
        f"/api/v1/datasets/{version_id}/export?format=dpo&split=all", **bearer(key)
    )
    bad_format = client.get(f"/api/v1/datasets/{version_id}/export?format=csv", **bearer(key))

    assert (created.status_code, unchanged.status_code) == (201, 200)
    assert unchanged.json()["dataset_version"]["id"] == version_id
    assert [v["id"] for v in listed] == [version_id]
    lines = b"".join(download.streaming_content).decode().splitlines()
    assert len(lines) == 3 and set(json.loads(lines[0])) == {"prompt", "chosen", "rejected"}
    assert "attachment" in download["Content-Disposition"]
    assert bad_format.status_code == 400
    other_key = api_key_create(project=ProjectFactory(), kind="secret", name="x").raw_key
    assert client.get(f"/api/v1/datasets/{version_id}", **bearer(other_key)).status_code == 404
