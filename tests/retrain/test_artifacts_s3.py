"""Artifacts in an S3-compatible bucket: a training worker uploads what it trains, and a web
process on another "machine" (its own, empty cache folder) fetches it to serve it."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection

from config.queues import Queue
from config.settings.database import database_url_from_config
from feedback.services.ratings import rating_submit
from flywheel.artifacts import artifact_key, artifact_store
from flywheel.ml.bundled import base_model_path
from flywheel.ml.loading import load_generator
from flywheel.models import ApiKey, Interaction
from flywheel.services import api_key_create
from retrain.datasets.snapshot import dataset_snapshot
from retrain.jobs.lifecycle import job_create
from retrain.models import DatasetRecord, DatasetVersion, Job
from retrain.training.job import JOB_OPTIONS, job_artifact_key
from tests.conftest import bearer, wait_for, worker_start
from tests.factories import ProjectFactory, curate, served
from tests.s3_server import S3Bucket, s3_bucket, use_bucket

CORRECTIONS = [
    ("What colour is the Quillmate Orbit hub?", "The Orbit hub is teal."),
    ("Which port does the Orbit hub use?", "The Orbit hub uses port 7788."),
]
BUCKET_PREFIX = "flywheel/artifacts"
TINY_TRAINING = {
    "evaluate": False,
    "r": 4,
    "lora_alpha": 8,
    "batch_size": 1,
    "max_length": 128,
    "max_steps": 2,
    "checkpoint_every_steps": 1,
}


@dataclass(frozen=True)
class Deployment:
    bucket: S3Bucket
    worker_work: Path
    worker_cache: Path
    web_cache: Path
    log_folder: Path

    def training_worker(self):
        return worker_start(
            database_url=database_url_from_config(connection.settings_dict),
            log_path=self.log_folder / "training-worker.log",
            queues=[Queue.TRAINING.value],
        )

    def objects_of(self, job: Job) -> list[str]:
        return self.bucket.object_names(f"{BUCKET_PREFIX}/{job_artifact_key(job)}/")


@pytest.fixture
def deployment(settings, monkeypatch, tmp_path):
    """This process is the web server and uses the bucket through its own cache; workers it
    starts train in a folder of their own and cache elsewhere."""
    with s3_bucket() as bucket:
        web_cache = tmp_path / "web-cache"
        use_bucket(
            bucket=bucket,
            prefix=BUCKET_PREFIX,
            cache_dir=web_cache,
            settings=settings,
            monkeypatch=monkeypatch,
        )
        settings.FLYWHEEL_ARTIFACTS_DIR = tmp_path / "worker-work"
        monkeypatch.setenv("FLYWHEEL_ARTIFACTS_CACHE", str(tmp_path / "worker-cache"))
        yield Deployment(
            bucket=bucket,
            worker_work=tmp_path / "worker-work",
            worker_cache=tmp_path / "worker-cache",
            web_cache=web_cache,
            log_folder=tmp_path,
        )


def _project_with_corrections():
    project = ProjectFactory()
    interactions = []
    for question, answer in CORRECTIONS:
        interaction = served(project, question, answer="I do not know.")
        rating_submit(
            interaction=interaction, rater_id="u", source="api", thumb="down", correction=answer
        )
        interactions.append(interaction)
    curate(project, *interactions)
    return project


def _finished(job_id: int):
    job = Job.objects.get(pk=job_id)
    return job if job.is_finished else None


def _trained(deployment: Deployment, job_id: int) -> Job:
    worker = deployment.training_worker()
    try:
        job = wait_for(lambda: _finished(job_id), what="training finishing", deadline_seconds=600)
    finally:
        worker.stop()
    assert job.state == Job.State.SUCCEEDED, f"{job.error}\n{worker.log_tail()}"
    return job


def _files(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.mark.django_db(transaction=True)
def test_an_adapter_a_worker_trained_is_fetched_from_the_bucket_and_served(client, deployment):
    project = _project_with_corrections()
    key = api_key_create(
        project=project, kind="secret", name="app", scopes=ApiKey.Scope.values
    ).raw_key
    started = client.post(
        "/api/v1/jobs",
        content_type="application/json",
        **bearer(key),
        data=json.dumps({"kind": "lora_training", "parameters": TINY_TRAINING}),
    )
    assert started.status_code == 202, started.content
    training = _trained(deployment, started.json()["id"])

    candidate = training.model_version
    stored_key = f"{job_artifact_key(training)}/adapter"
    assert candidate.adapter_path == f"artifact:{stored_key}"
    assert artifact_key(candidate.adapter_path) == stored_key
    adapter_prefix = f"{BUCKET_PREFIX}/{stored_key}/"
    job_objects = deployment.objects_of(training)
    # Only the adapter: the checkpoint the run went through is deleted once it is done.
    assert all(name.startswith(adapter_prefix) for name in job_objects), job_objects
    adapter_files = [name.removeprefix(adapter_prefix) for name in job_objects]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(adapter_files)
    assert not (deployment.worker_work / job_artifact_key(training)).exists(), "in the bucket"
    assert not deployment.web_cache.exists()

    answered = client.post(
        "/v1/chat/completions",
        content_type="application/json",
        **bearer(key),
        data=json.dumps(
            {
                "model": "flywheel:candidate",
                "messages": [{"role": "user", "content": CORRECTIONS[0][0]}],
                "max_tokens": 4,
                "flywheel": {"rag": False},
            }
        ),
    )

    assert answered.status_code == 200, answered.content
    body = answered.json()
    assert body["flywheel"]["model_version"]["name"] == candidate.name
    interaction = Interaction.objects.get(pk=body["flywheel"]["interaction_id"])
    assert interaction.model_version == candidate
    cached = deployment.web_cache / deployment.bucket.name / BUCKET_PREFIX / stored_key
    assert _files(cached) == sorted(adapter_files)
    assert str(cached.resolve()) in load_generator().adapters, "served from the cache"
    assert not deployment.worker_cache.exists(), "the worker uploaded; it never had to fetch"
    assert str(deployment.log_folder) not in answered.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_job_retried_on_another_worker_resumes_from_the_checkpoint_in_the_bucket(
    deployment, tmp_path, one_torch_thread
):
    from retrain.training.lora import TrainingParameters, TrainingStopped, lora_train

    project = _project_with_corrections()
    dataset, _ = dataset_snapshot(project=project, trigger=DatasetVersion.Trigger.API)
    job = job_create(
        project=project,
        kind=Job.Kind.LORA_TRAINING,
        trigger=Job.Trigger.API,
        parameters={**TINY_TRAINING, "dataset_version": dataset.number},
    )
    # Its first attempt, on a machine that is gone afterwards, got through one step.
    first_machine = tmp_path / "first-machine"
    steps_done: list[int] = []
    with pytest.raises(TrainingStopped):
        lora_train(
            base_model_path=base_model_path(),
            records=DatasetRecord.objects.filter(
                dataset_version=dataset, kind=DatasetRecord.Kind.SFT, split="train"
            ).order_by("pk"),
            parameters=TrainingParameters.from_dict(
                {k: v for k, v in job.parameters.items() if k not in JOB_OPTIONS}
            ),
            output_dir=first_machine,
            on_step=lambda step, *_: steps_done.append(step),
            should_stop=lambda: bool(steps_done),
            on_checkpoint=lambda folder: artifact_store().put_folder(
                folder, f"{job_artifact_key(job)}/checkpoint"
            ),
        )
    shutil.rmtree(first_machine)
    assert any("/checkpoint/" in name for name in deployment.objects_of(job))

    trained = _trained(deployment, job.pk)

    assert trained.metrics["resumed_from_step"] == 1
    assert [point["step"] for point in trained.metrics["loss_curve"]] == [1, 2]
    assert trained.model_version.metrics["training"]["resumed_from_step"] == 1
    assert not any("/checkpoint/" in name for name in deployment.objects_of(job))
