"""Dataset versions: immutable, content-hashed snapshots; exports that `datasets` loads in
the shapes TRL's SFT and DPO trainers take."""

import json

import datasets
import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from feedback.services.ratings import rating_submit
from feedback.services.reviews import review_submit
from flywheel.models import ApiKey, Interaction
from flywheel.services import api_key_create
from flywheel.services.interactions import interactions_log_batch
from retrain.curation.policy import curation_policy_get
from retrain.datasets.exports import (
    EXPORT_FORMATS,
    SPLITS,
    EmptyExport,
    dataset_export_lines,
    dataset_export_rows,
)
from retrain.datasets.snapshot import dataset_snapshot
from retrain.jobs.lifecycle import InvalidJobParameters, job_create
from retrain.models import CurationPolicy, DatasetRecord, Job
from tests.conftest import bearer, wait_for
from tests.factories import ProjectFactory, curate, served


@pytest.fixture
def rated_project(db):
    """Six clusters: corrections, approvals, thumbs, and a thumbs-down twin of a good answer."""
    return _rated_project()


def _rated_project(*, eval_fraction: float | None = None):
    project = ProjectFactory()
    if eval_fraction is not None:
        curation_policy_get(project=project)
        CurationPolicy.objects.filter(project=project).update(eval_fraction=eval_fraction)
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
    assert set(alpaca.column_names) == {"instruction", "input", "output", "system"}
    assert "Refunds within 14 days." not in alpaca[0]["system"], "the context is the input"
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
    from flywheel.models import ApiKey
    from flywheel.services import api_key_create

    key = api_key_create(
        project=rated_project, kind="secret", name="ci", scopes=ApiKey.Scope.values
    ).raw_key

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
    other_key = api_key_create(
        project=ProjectFactory(), kind="secret", name="x", scopes=ApiKey.Scope.values
    ).raw_key
    assert client.get(f"/api/v1/datasets/{version_id}", **bearer(other_key)).status_code == 404


def _key(project) -> str:
    return api_key_create(
        project=project, kind="secret", name="ci", scopes=ApiKey.Scope.values
    ).raw_key


def _load(tmp_path, version, export_format, split):
    """The export as `datasets` loads it; None where the split has no export."""
    try:
        dataset_export_lines(version=version, export_format=export_format, split=split)
    except EmptyExport:
        return None
    return _export(tmp_path, version, export_format, split)


@pytest.mark.django_db
@pytest.mark.parametrize("eval_fraction", [0, 0.5])
def test_every_export_of_every_split_loads_with_datasets_or_has_no_file(tmp_path, eval_fraction):
    """With eval_fraction 0 the eval split is empty: its exports are refused, never served
    as a file `datasets.load_dataset` cannot read."""
    project = _rated_project(eval_fraction=eval_fraction)
    version, _ = dataset_snapshot(project=project, trigger="command")

    for export_format in EXPORT_FORMATS:
        for split in SPLITS:
            rows = dataset_export_rows(version=version, export_format=export_format, split=split)
            loaded = _load(tmp_path, version, export_format, split)
            assert (0 if loaded is None else len(loaded)) == rows, (export_format, split)
    if eval_fraction == 0:
        assert version.counts["eval"] == version.counts["preference_eval"] == 0
        with pytest.raises(EmptyExport, match="no instruction examples in its eval split"):
            dataset_export_lines(version=version, export_format="chat", split="eval")


@pytest.mark.django_db
def test_the_api_answers_an_empty_split_with_a_json_error(client):
    project = _rated_project(eval_fraction=0)
    key = _key(project)
    version_id = client.post("/api/v1/datasets", **bearer(key)).json()["dataset_version"]["id"]

    empty = client.get(f"/api/v1/datasets/{version_id}/export?format=dpo&split=eval", **bearer(key))

    assert empty.status_code == 404
    error = empty.json()["error"]
    assert error["code"] == "empty_split" and "no preference pairs" in error["message"]


@pytest.mark.django_db
def test_stats_count_scrubbed_pii_per_kind_and_pairs_that_scrubbing_made_identical():
    project = ProjectFactory()
    same_after_scrubbing = served(
        project, "Where do I send the form? I'm jo@example.com", "Send it to ana@example.com."
    )
    rating_submit(
        interaction=same_after_scrubbing,
        rater_id="u",
        source="api",
        thumb="down",
        correction="Send it to ben@example.com.",
    )
    real_pair = served(project, "Why is 203.0.113.9 blocked?", "It is not blocked.")
    rating_submit(
        interaction=real_pair,
        rater_id="u",
        source="api",
        thumb="down",
        correction="Too many failed logins from it; it unblocks after an hour.",
    )
    curate(project, same_after_scrubbing, real_pair)

    version, _ = dataset_snapshot(project=project, trigger="command")

    assert version.stats["pii_scrubbed"] == {"EMAIL": 3, "IP_ADDRESS": 1}
    assert version.stats["identical_pairs_dropped"] == 1
    pairs = version.records.filter(kind=DatasetRecord.Kind.PREFERENCE)
    assert [pair.rejected for pair in pairs] == ["It is not blocked."]


@pytest.mark.django_db
def test_exports_of_a_logged_interaction_are_its_logged_messages_and_the_preferred_answer(
    tmp_path,
):
    project = ProjectFactory()
    logged = [
        {"role": "system", "content": "You are Acme's billing bot.\n\nContext:\nRefunds: 5 days."},
        {"role": "user", "content": "How long does a refund take?"},
        {"role": "assistant", "content": "Five days."},
        {"role": "user", "content": "Even for annual plans?"},
    ]
    [result] = interactions_log_batch(
        project=project, interactions=[{"messages": logged, "response": "Yes, five days."}]
    )
    interaction = Interaction.objects.get(pk=result.id)
    preferred = "Yes: five working days for every plan."
    rating_submit(
        interaction=interaction, rater_id="u", source="api", thumb="down", correction=preferred
    )
    curate(project, interaction)
    version, _ = dataset_snapshot(project=project, trigger="command")

    [chat] = _export(tmp_path, version, "chat", "all")
    [alpaca] = _export(tmp_path, version, "alpaca", "all")
    [dpo] = _export(tmp_path, version, "dpo", "all")

    assert chat["messages"] == [*logged, {"role": "assistant", "content": preferred}]
    assert dpo["prompt"] == logged
    assert dpo["chosen"] == [{"role": "assistant", "content": preferred}]
    assert dpo["rejected"] == [{"role": "assistant", "content": "Yes, five days."}]
    assert alpaca == {
        "system": logged[0]["content"],
        "instruction": "Even for annual plans?",
        "input": "user: How long does a refund take?\nassistant: Five days.",
        "output": preferred,
    }


@pytest.mark.django_db
def test_a_dataset_whose_eval_split_is_below_the_gate_minimum_says_so_and_refuses_evaluation(
    client, rated_project
):
    key = _key(rated_project)
    snapshot = client.post("/api/v1/datasets", **bearer(key)).json()["dataset_version"]
    eval_examples = snapshot["counts"]["eval"]
    CurationPolicy.objects.filter(project=rated_project).update(min_eval_examples=eval_examples + 1)

    detail = client.get(f"/api/v1/datasets/{snapshot['id']}", **bearer(key)).json()
    [listed] = client.get("/api/v1/datasets", **bearer(key)).json()

    def start(parameters):
        return client.post(
            "/api/v1/jobs",
            data={"kind": "lora_training", "parameters": parameters},
            content_type="application/json",
            **bearer(key),
        )

    refused = start({"dataset_version": snapshot["number"], "evaluate": True})
    refused_fresh = start({})
    accepted = start({"dataset_version": snapshot["number"], "evaluate": False})

    assert detail["eval_examples_needed"] == eval_examples + 1
    assert f"fewer than the {eval_examples + 1}" in detail["eval_warning"]
    assert listed["eval_warning"] == detail["eval_warning"]
    assert refused.status_code == refused_fresh.status_code == 400
    message = refused.json()["error"]["message"]
    assert message.startswith(f"Dataset v{snapshot['number']}: The eval split holds")
    assert "evaluate=true is refused" in message
    assert refused_fresh.json()["error"]["message"].startswith("The curated examples:")
    assert accepted.status_code == 202
    CurationPolicy.objects.filter(project=rated_project).update(min_eval_examples=eval_examples)
    enough = client.get(f"/api/v1/datasets/{snapshot['id']}", **bearer(key)).json()
    assert enough["eval_warning"] == ""


@pytest.mark.django_db(transaction=True)
def test_jobs_report_an_eval_split_below_the_minimum_and_training_on_it_fails(celery_worker):
    project = _rated_project(eval_fraction=0)
    CurationPolicy.objects.filter(project=project).update(min_eval_examples=0)
    with transaction.atomic():
        # Accepted while the minimum is 0; the run checks again under the policy it finds.
        training = job_create(
            project=project,
            kind=Job.Kind.LORA_TRAINING,
            trigger=Job.Trigger.API,
            parameters={"evaluate": True, "max_steps": 1},
        )
        CurationPolicy.objects.filter(project=project).update(min_eval_examples=5)
    snapshot = job_create(project=project, kind=Job.Kind.DATASET_SNAPSHOT, trigger="api")

    def finished(job):
        job.refresh_from_db()
        return job if job.is_finished else None

    snapshot = wait_for(lambda: finished(snapshot), what="the snapshot", deadline_seconds=120)
    training = wait_for(lambda: finished(training), what="the training", deadline_seconds=180)

    assert snapshot.state == "succeeded"
    assert "The eval split holds 0 examples, fewer than the 5" in snapshot.log_tail
    assert training.state == "failed"
    assert "The eval split holds 0 examples" in training.error
    assert training.model_version is None
    with pytest.raises(InvalidJobParameters, match="evaluate=true is refused"):
        job_create(
            project=project,
            kind=Job.Kind.LORA_TRAINING,
            trigger=Job.Trigger.API,
            parameters={"dataset_version": snapshot.dataset_version.number},
        )


@pytest.mark.django_db
def test_a_golden_set_counts_toward_the_gate_minimum(settings, tmp_path):
    project = _rated_project(eval_fraction=0)
    CurationPolicy.objects.filter(project=project).update(min_eval_examples=3)
    settings.FLYWHEEL_GOLDEN_SETS_DIR = tmp_path
    for name, size in (("two.jsonl", 2), ("three.jsonl", 3)):
        (tmp_path / name).write_text(
            "".join(
                json.dumps({"question": f"Q{n}?", "answer": f"A{n}."}) + "\n" for n in range(size)
            )
        )

    def start(golden_set):
        return job_create(
            project=project,
            kind=Job.Kind.LORA_TRAINING,
            trigger=Job.Trigger.API,
            parameters={"golden_set": golden_set},
        )

    with pytest.raises(InvalidJobParameters) as refused:
        start("two.jsonl")
    accepted = start("three.jsonl")

    assert "holds 0 examples and the golden set 2, together fewer than the 3" in str(refused.value)
    assert accepted.parameters["golden_set"] == "three.jsonl"
