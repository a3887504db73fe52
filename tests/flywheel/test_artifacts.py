"""The artifact store on both backends: a local folder and a real S3-compatible server."""

import socket
from pathlib import Path

import numpy as np
import pytest

from flywheel.artifacts import (
    ArtifactNotFound,
    ArtifactStorageMisconfigured,
    LocalArtifactStore,
    S3ArtifactStore,
    artifact_folder,
    artifact_key,
    artifact_publish,
    artifact_reference,
    artifact_store,
)
from flywheel.ml.bundled import embedding_model_path
from flywheel.ml.loading import embed_texts
from flywheel.models import EmbeddingModelVersion, IndexVersion
from tests.conftest import bearer
from tests.s3_server import CREDENTIALS, s3_bucket, use_bucket

ADAPTER_FILES = {
    "adapter_config.json": b'{"r": 8}',
    "adapter_model.safetensors": bytes(range(256)) * 64,
    "tokenizer/tokenizer.json": '{"vocabulary": "é"}'.encode(),
}


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def _read(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }


@pytest.fixture(scope="module")
def bucket():
    with s3_bucket() as bucket:
        yield bucket


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "store")
    bucket = request.getfixturevalue("bucket")
    return S3ArtifactStore(
        bucket=bucket.name,
        prefix=f"/unit/{tmp_path.name}/",
        cache_dir=tmp_path / "cache",
        endpoint_url=bucket.endpoint_url,
        region="us-east-1",
    )


@pytest.fixture(autouse=True)
def s3_credentials(monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def test_a_folder_put_comes_back_whole_from_get_and_local_folder(store, tmp_path):
    source = _write(tmp_path / "trained", ADAPTER_FILES)
    assert not store.exists("demo/jobs/1/adapter")

    store.put_folder(source, "demo/jobs/1/adapter")

    assert store.exists("demo/jobs/1/adapter")
    store.get_folder("demo/jobs/1/adapter", tmp_path / "fetched")
    assert _read(tmp_path / "fetched") == ADAPTER_FILES
    assert _read(store.local_folder("demo/jobs/1/adapter")) == ADAPTER_FILES


def test_putting_a_key_again_replaces_its_files(store, tmp_path):
    store.put_folder(_write(tmp_path / "first", ADAPTER_FILES), "demo/jobs/2/checkpoint")
    store.put_folder(
        _write(tmp_path / "second", {"progress.json": b'{"step": 2}'}), "demo/jobs/2/checkpoint"
    )

    store.get_folder("demo/jobs/2/checkpoint", tmp_path / "fetched")
    assert _read(tmp_path / "fetched") == {"progress.json": b'{"step": 2}'}


def test_a_deleted_artifact_is_gone_and_deleting_it_again_is_harmless(store, tmp_path):
    store.put_folder(_write(tmp_path / "trained", ADAPTER_FILES), "demo/jobs/3/adapter")
    store.put_folder(_write(tmp_path / "other", ADAPTER_FILES), "demo/jobs/30/adapter")

    store.delete("demo/jobs/3/adapter")
    store.delete("demo/jobs/3/adapter")

    assert not store.exists("demo/jobs/3/adapter")
    assert store.exists("demo/jobs/30/adapter"), "a key sharing the prefix is another artifact"
    with pytest.raises(ArtifactNotFound):
        store.get_folder("demo/jobs/3/adapter", tmp_path / "fetched")
    with pytest.raises(ArtifactNotFound):
        store.local_folder("demo/jobs/3/adapter")


@pytest.mark.parametrize("key", ["", "/etc/passwd", "demo/../../etc", "demo/./x", "a\\b"])
def test_a_key_that_could_leave_the_store_is_refused(store, tmp_path, key):
    with pytest.raises(ValueError, match="not an artifact key"):
        store.put_folder(_write(tmp_path / "trained", ADAPTER_FILES), key)


def test_a_reference_names_a_key_and_a_plain_folder_is_no_reference():
    reference = artifact_reference("demo/jobs/4/adapter")
    assert reference == "artifact:demo/jobs/4/adapter"
    assert artifact_key(reference) == "demo/jobs/4/adapter"
    assert artifact_key("/srv/models/adapter") is None
    assert str(Path(reference)) == reference, "survives callers that wrap it in a Path"
    assert artifact_folder("/srv/models/adapter") == Path("/srv/models/adapter")


def test_without_an_artifacts_url_artifacts_are_kept_in_the_artifacts_folder(settings, tmp_path):
    settings.FLYWHEEL_ARTIFACTS_URL = ""
    settings.FLYWHEEL_ARTIFACTS_DIR = tmp_path / "artifacts"

    reference = artifact_publish(
        folder=_write(tmp_path / "trained", ADAPTER_FILES), key="demo/jobs/5/adapter"
    )

    assert isinstance(artifact_store(), LocalArtifactStore)
    assert artifact_folder(reference) == tmp_path / "artifacts" / "demo" / "jobs" / "5" / "adapter"
    assert _read(artifact_folder(reference)) == ADAPTER_FILES


def test_with_an_s3_url_a_process_fetches_an_artifact_once_into_its_cache(
    settings, monkeypatch, bucket, tmp_path
):
    use_bucket(
        bucket=bucket,
        prefix="flywheel/artifacts",
        cache_dir=tmp_path / "web-cache",
        settings=settings,
        monkeypatch=monkeypatch,
    )
    reference = artifact_publish(
        folder=_write(tmp_path / "trained", ADAPTER_FILES), key="demo/jobs/6/adapter"
    )
    assert isinstance(artifact_store(), S3ArtifactStore)
    assert bucket.object_names("flywheel/artifacts/demo/jobs/6/") == sorted(
        f"flywheel/artifacts/demo/jobs/6/adapter/{name}" for name in ADAPTER_FILES
    )
    assert not (tmp_path / "web-cache").exists()

    folder = artifact_folder(reference)

    assert folder.is_relative_to(tmp_path / "web-cache")
    assert _read(folder) == ADAPTER_FILES
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".staging-")]
    # Artifacts never change: once cached, the bucket is not asked again.
    bucket.client.delete_objects(
        Bucket=bucket.name,
        Delete={"Objects": [{"Key": name} for name in bucket.object_names("flywheel/")]},
    )
    assert artifact_folder(reference) == folder and _read(folder) == ADAPTER_FILES


def test_an_artifacts_url_of_another_kind_is_refused(settings):
    settings.FLYWHEEL_ARTIFACTS_URL = "ftp://example.com/artifacts"
    with pytest.raises(ArtifactStorageMisconfigured, match="s3://bucket"):
        artifact_store()


@pytest.mark.django_db
def test_a_retriever_stored_in_the_bucket_is_fetched_to_embed_for_the_index_it_built(
    client, secret_key, project, settings, monkeypatch, bucket, tmp_path
):
    use_bucket(
        bucket=bucket,
        prefix="flywheel/artifacts",
        cache_dir=tmp_path / "web-cache",
        settings=settings,
        monkeypatch=monkeypatch,
    )
    # A fine-tuned retriever as a training worker would have stored it.
    reference = artifact_publish(
        folder=embedding_model_path(), key=f"{project.slug}/retrievers/job-1"
    )
    retriever = EmbeddingModelVersion.objects.create(
        project=project,
        name="retriever-1",
        path=reference,
        status=EmbeddingModelVersion.Status.PRODUCTION,
    )
    IndexVersion.objects.create(
        project=project,
        number=1,
        status=IndexVersion.Status.ACTIVE,
        embedding_model=reference,
        embedding_model_version=retriever,
    )
    question = "How long are deleted notes kept?"

    response = client.post(
        "/v1/embeddings",
        content_type="application/json",
        **bearer(secret_key),
        data={"model": "retriever-1", "input": [question]},
    )

    assert response.status_code == 200, response.content
    assert response.json()["model"] == "retriever-1"
    cached = tmp_path / "web-cache" / bucket.name / "flywheel/artifacts" / artifact_key(reference)
    assert (cached / "config.json").exists()
    assert np.allclose(response.json()["data"][0]["embedding"], embed_texts([question])[0])
    assert str(tmp_path) not in response.content.decode()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.django_db
def test_a_retriever_in_a_store_that_does_not_answer_gets_a_503_to_retry(
    client, secret_key, project, settings, tmp_path
):
    settings.FLYWHEEL_ARTIFACTS_URL = "s3://flywheel-artifacts/prefix"
    settings.FLYWHEEL_S3_ENDPOINT_URL = f"http://127.0.0.1:{_closed_port()}"
    settings.FLYWHEEL_ARTIFACTS_CACHE = tmp_path / "web-cache"
    reference = artifact_reference(f"{project.slug}/retrievers/job-2")
    retriever = EmbeddingModelVersion.objects.create(
        project=project,
        name="retriever-2",
        path=reference,
        status=EmbeddingModelVersion.Status.PRODUCTION,
    )
    IndexVersion.objects.create(
        project=project,
        number=1,
        status=IndexVersion.Status.ACTIVE,
        embedding_model=reference,
        embedding_model_version=retriever,
    )

    response = client.post(
        "/v1/embeddings",
        content_type="application/json",
        **bearer(secret_key),
        data={"model": "retriever-2", "input": ["How long are deleted notes kept?"]},
    )

    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "artifact_store_unavailable"
    assert response["Retry-After"]
