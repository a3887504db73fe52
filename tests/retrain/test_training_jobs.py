"""LoRA training, evaluation and promotion as jobs, on real workers with the real model."""

import json
import os
import signal
import uuid

import pytest
import torch
from django.conf import settings as django_settings
from django.db import connection

from config.queues import Queue
from config.settings.database import database_url_from_config
from feedback.services.ratings import rating_submit
from flywheel.ml.bundled import base_model_path
from flywheel.models import ApiKey, ModelVersion
from flywheel.services import api_key_create
from flywheel.services.model_versions import model_version_production_ensure
from retrain.curation.policy import curation_policy_get
from retrain.evaluation import job as evaluation
from retrain.jobs.lifecycle import job_create, job_run, jobs_reap_stale
from retrain.models import CurationPolicy, Job
from retrain.training.job import job_output_dir
from tests.conftest import bearer, wait_for, worker_start
from tests.factories import ProjectFactory, curate, served

FACTS = [
    ("What colour is the Quillmate Orbit hub?", "The Orbit hub is teal."),
    ("How many shelves fit on a Quillmate Orbit?", "An Orbit holds 12 shelves."),
    ("Which port does the Orbit hub use?", "The Orbit hub uses port 7788."),
    ("Who makes the Orbit hub?", "Larkspur Devices makes the Orbit hub."),
    ("What does the Orbit's amber light mean?", "Amber means the hub is syncing."),
    ("How heavy is the Orbit hub?", "The Orbit hub weighs 340 grams."),
]
SMALL_TRAINING = {
    "r": 8,
    "lora_alpha": 16,
    "learning_rate": 2e-3,
    "batch_size": 2,
    "max_length": 256,
}


def _project_with_corrections():
    """A project whose users corrected every answer: curated examples teach the facts."""
    project = ProjectFactory()
    curation_policy_get(project=project)
    # Everything in train: the golden set below is what the gate measures, all of it.
    CurationPolicy.objects.filter(project=project).update(
        eval_fraction=0, min_eval_examples=len(FACTS)
    )
    interactions = []
    for question, answer in FACTS:
        interaction = served(project, question, answer="I do not know.")
        rating_submit(
            interaction=interaction, rater_id="u", source="api", thumb="down", correction=answer
        )
        interactions.append(interaction)
    curate(project, *interactions)
    return project


def _golden_set() -> str:
    folder = django_settings.FLYWHEEL_GOLDEN_SETS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"orbit-{uuid.uuid4().hex[:8]}.jsonl"
    (folder / name).write_text(
        "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in FACTS)
    )
    return name


def _finished(job_id: int):
    job = Job.objects.get(pk=job_id)
    return job if job.is_finished else None


@pytest.fixture
def training_worker(django_db_setup, tmp_path):
    worker = worker_start(
        database_url=database_url_from_config(connection.settings_dict),
        log_path=tmp_path / "training-worker.log",
        queues=[Queue.TRAINING.value],
    )
    yield worker
    worker.stop()


def _chat_model_version(client, key) -> str:
    response = client.post(
        "/v1/chat/completions",
        content_type="application/json",
        **bearer(key),
        data=json.dumps(
            {
                "messages": [{"role": "user", "content": FACTS[0][0]}],
                "max_tokens": 8,
                "flywheel": {"rag": False},
            }
        ),
    )
    return response.json()["flywheel"]["model_version"]["name"]


@pytest.mark.django_db(transaction=True)
def test_a_trained_candidate_that_beats_production_is_promoted_and_served_then_rolled_back(
    client, training_worker
):
    project = _project_with_corrections()
    key = api_key_create(
        project=project, kind="secret", name="app", scopes=ApiKey.Scope.values
    ).raw_key
    base = model_version_production_ensure(project=project)

    started = client.post(
        "/api/v1/jobs",
        content_type="application/json",
        **bearer(key),
        data=json.dumps(
            {
                "kind": "lora_training",
                "parameters": {
                    **SMALL_TRAINING,
                    "max_steps": 12,
                    "golden_set": _golden_set(),
                    "evaluation_max_new_tokens": 8,
                },
            }
        ),
    )
    assert started.status_code == 202, started.content
    training = wait_for(
        lambda: _finished(started.json()["id"]), what="training finishing", deadline_seconds=900
    )
    assert training.state == "succeeded", training.error
    assert [p["step"] for p in training.metrics["loss_curve"]] == list(range(1, 13))
    candidate = training.model_version
    assert candidate.dataset_version_id == training.dataset_version_id
    assert candidate.parent == base and candidate.training_job_id == training.pk
    assert (job_output_dir(training) / "adapter" / "adapter_config.json").exists()

    evaluation_job = wait_for(
        lambda: _finished(Job.objects.get(parent=training, kind="evaluation").pk),
        what="the evaluation finishing",
        deadline_seconds=900,
    )
    assert evaluation_job.state == "succeeded", evaluation_job.error
    scores = evaluation_job.metrics["suites"]["golden_set"]
    assert scores["candidate"]["eval_loss"] < scores["production"]["eval_loss"]
    assert evaluation_job.metrics["gate"]["decision"] == "promote"
    candidate.refresh_from_db()
    assert candidate.status == "production"
    assert _chat_model_version(client, key) == candidate.name

    client.post("/api/v1/model-versions/rollback", **bearer(key))
    assert _chat_model_version(client, key) == "base"


@pytest.mark.django_db
def test_the_gate_refuses_a_candidate_that_is_worse(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    project = ProjectFactory()
    production = model_version_production_ensure(project=project)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base_model_path()))
    damaging = LoraConfig(
        r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )  # random weights: a worse model
    get_peft_model(model, damaging).save_pretrained(tmp_path / "adapter")
    worse = ModelVersion.objects.create(
        project=project, name="worse", base_model="", adapter_path=str(tmp_path / "adapter")
    )
    job = job_create(
        project=project,
        kind="evaluation",
        trigger="api",
        parameters={"model_version": worse.pk, "golden_set": _golden_set(), "max_new_tokens": 8},
    )

    assert job_run(job_id=job.pk, handler=evaluation.run) == "succeeded"

    job.refresh_from_db()
    worse.refresh_from_db()
    production.refresh_from_db()
    assert job.metrics["gate"]["decision"] in ("reject", "insufficient_evidence")
    assert (worse.status, production.status) == ("candidate", "production")
    assert worse.metrics["evaluation"]["gate"] == job.metrics["gate"]


@pytest.mark.django_db(transaction=True)
def test_a_killed_training_worker_is_replaced_and_the_job_resumes_from_its_checkpoint(
    tmp_path, settings
):
    project = _project_with_corrections()
    database_url = database_url_from_config(connection.settings_dict)

    def start_worker(name, *, wait=True):
        return worker_start(
            database_url=database_url,
            log_path=tmp_path / name,
            queues=[Queue.TRAINING.value],
            wait=wait,
        )

    first = start_worker("first.log")
    parameters = {**SMALL_TRAINING, "max_steps": 12, "checkpoint_every_steps": 3, "evaluate": False}
    job = job_create(project=project, kind="lora_training", trigger="api", parameters=parameters)
    try:
        wait_for(
            lambda: len(Job.objects.get(pk=job.pk).metrics.get("loss_curve", [])) >= 4,
            what="four training steps",
            deadline_seconds=600,
        )
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait()
    finally:
        first.stop()
    settings.FLYWHEEL_JOB_HEARTBEAT_TIMEOUT_SECONDS = 1
    wait_for(
        lambda: job.pk in jobs_reap_stale()["retried"],
        what="the reaper noticing the dead worker",
        deadline_seconds=60,
    )

    second = start_worker("second.log", wait=False)  # takes the re-queued job once up
    try:
        finished = wait_for(
            lambda: _finished(job.pk), what="the resumed run finishing", deadline_seconds=900
        )
    finally:
        second.stop()
    assert finished.state == "succeeded", finished.error
    assert finished.attempts == 2
    resumed_from = finished.metrics["resumed_from_step"]
    assert resumed_from >= 3 and resumed_from % 3 == 0, "from a checkpoint, not from scratch"
    assert [p["step"] for p in finished.metrics["loss_curve"]] == list(range(1, 13))
    assert finished.model_version.status == "candidate"


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_training_job_stops_it_and_removes_its_files(client, training_worker):
    project = _project_with_corrections()
    key = api_key_create(
        project=project, kind="secret", name="app", scopes=ApiKey.Scope.values
    ).raw_key
    parameters = {**SMALL_TRAINING, "max_steps": 200, "evaluate": False}
    job = job_create(project=project, kind="lora_training", trigger="api", parameters=parameters)
    wait_for(
        lambda: Job.objects.get(pk=job.pk).metrics.get("loss_curve"),
        what="training under way",
        deadline_seconds=600,
    )

    cancelled = client.post(f"/api/v1/jobs/{job.pk}/cancel", **bearer(key))
    assert cancelled.json()["cancel_requested"] is True
    finished = wait_for(lambda: _finished(job.pk), what="the job stopping", deadline_seconds=120)

    assert finished.state == "cancelled"
    assert len(finished.metrics["loss_curve"]) < 200
    assert not job_output_dir(finished).exists()
    assert not ModelVersion.objects.filter(training_job_id=finished.pk).exists()
