"""Where trained artifacts live: LoRA adapters, training checkpoints and fine-tuned embedding
models, each a folder stored under a key such as `demo/jobs/12/adapter`.

Two stores behind one interface: a local folder (FLYWHEEL_ARTIFACTS_DIR, the default) and an
S3-compatible bucket (FLYWHEEL_ARTIFACTS_URL=s3://bucket/prefix), which lets the training
workers and the web processes run on different machines. A version records an artifact
reference (`artifact:<key>`), never a server path; a process that needs the files asks for
`artifact_folder(reference)`, which, for a bucket, downloads them once into its cache folder
(FLYWHEEL_ARTIFACTS_CACHE). Adapters and retrievers are written once and never changed, so a
cached copy never goes stale; a job's checkpoint is rewritten as it trains, and read only whole,
with `get_folder`, never through the cache.

Values recorded before references existed (absolute folders) and the configured base models
are plain folders: `artifact_folder` hands those back as they are.
"""

import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings

ARTIFACT_SCHEME = "artifact:"
# Folders being written are staged beside their destination under this prefix, then renamed
# into place, so a reader never sees half an artifact.
STAGING_PREFIX = ".staging-"


class ArtifactNotFound(LookupError):
    """No artifact is stored under the key."""


class ArtifactStoreUnavailable(RuntimeError):
    """The store could not be reached or refused the request (credentials, bucket, network)."""


@contextmanager
def _bucket_errors(bucket: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise ArtifactStoreUnavailable(f"the artifact bucket {bucket} failed: {error}") from error


class ArtifactStorageMisconfigured(ValueError):
    """FLYWHEEL_ARTIFACTS_URL names no store this module knows."""


def artifact_key_check(key: str) -> str:
    """`key` if it is a relative, `/`-separated path that stays inside the store."""
    if "\\" in key or any(part in {"", ".", ".."} for part in key.split("/")):
        raise ValueError(f"not an artifact key: {key!r}")
    return key


def artifact_reference(key: str) -> str:
    """What a version records for the artifact stored under `key`."""
    return ARTIFACT_SCHEME + artifact_key_check(key)


def artifact_key(reference: str) -> str | None:
    """The key of an artifact reference; None for a plain folder path."""
    if not reference.startswith(ARTIFACT_SCHEME):
        return None
    return artifact_key_check(reference[len(ARTIFACT_SCHEME) :])


def _replace_folder(staging: Path, destination: Path) -> None:
    """Move the finished `staging` folder to `destination`; a folder already there (written
    by another process meanwhile, or an older copy) is replaced."""
    if destination.exists():
        retired = Path(tempfile.mkdtemp(dir=destination.parent, prefix=STAGING_PREFIX))
        destination.rename(retired / "old")
        shutil.rmtree(retired, ignore_errors=True)
    staging.rename(destination)


def _files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


class ArtifactStore(ABC):
    """Folders of files under keys. `local_folder` gives a folder on this machine to read an
    artifact from; the rest move whole folders in and out of the store."""

    @abstractmethod
    def put_folder(self, source: Path, key: str) -> None:
        """Store the files under `source` as the artifact `key`, replacing what was there."""

    @abstractmethod
    def get_folder(self, key: str, destination: Path) -> None:
        """Copy the artifact `key` to `destination` (replaced); ArtifactNotFound if absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the artifact `key`; nothing happens if it is not there."""

    @abstractmethod
    def local_folder(self, key: str) -> Path:
        """A folder on this machine holding the artifact `key`; ArtifactNotFound if absent."""


class LocalArtifactStore(ArtifactStore):
    """Artifacts as folders under `root`: what a single machine needs."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / artifact_key_check(key)

    def put_folder(self, source: Path, key: str) -> None:
        destination = self._path(key)
        if Path(source).resolve() == destination.resolve():
            return  # a job wrote it in place
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=STAGING_PREFIX))
        shutil.copytree(source, staging, dirs_exist_ok=True)
        _replace_folder(staging, destination)

    def get_folder(self, key: str, destination: Path) -> None:
        source = self.local_folder(key)
        destination = Path(destination)
        if source.resolve() == destination.resolve():
            return
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=STAGING_PREFIX))
        shutil.copytree(source, staging, dirs_exist_ok=True)
        _replace_folder(staging, destination)

    def exists(self, key: str) -> bool:
        return self._path(key).is_dir()

    def delete(self, key: str) -> None:
        shutil.rmtree(self._path(key), ignore_errors=True)

    def local_folder(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_dir():
            raise ArtifactNotFound(f"no artifact {key}")
        return path


class S3ArtifactStore(ArtifactStore):
    """Artifacts as objects `<prefix>/<key>/<file>` in an S3-compatible bucket (AWS S3, MinIO,
    Ceph, R2…), read through a local cache folder. Credentials come from boto3's usual chain
    (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, an instance role)."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        cache_dir: Path,
        endpoint_url: str = "",
        region: str = "",
    ):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # One cache per bucket and prefix: two stores never mistake each other's files.
        self.cache_dir = Path(cache_dir) / bucket / (self.prefix or "_")
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            # A store that does not answer fails the request within seconds, not minutes.
            config=Config(
                connect_timeout=5, read_timeout=60, retries={"mode": "standard", "max_attempts": 3}
            ),
        )

    def _object_prefix(self, key: str) -> str:
        key = artifact_key_check(key)
        return f"{self.prefix}/{key}/" if self.prefix else f"{key}/"

    def _object_names(self, key: str, *, limit: int | None = None) -> list[str]:
        prefix = self._object_prefix(key)
        names: list[str] = []
        with _bucket_errors(self.bucket):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=prefix,
                PaginationConfig={"MaxItems": limit} if limit else {},
            )
            for page in pages:
                names.extend(item["Key"] for item in page.get("Contents", []))
        return names

    def put_folder(self, source: Path, key: str) -> None:
        source = Path(source)
        prefix = self._object_prefix(key)
        files = _files_under(source)
        wanted = {prefix + path.relative_to(source).as_posix() for path in files}
        # Files of an earlier upload under the key that this one lacks would mix two folders.
        self._delete_objects([name for name in self._object_names(key) if name not in wanted])
        with _bucket_errors(self.bucket):
            for path in files:
                self.client.upload_file(
                    str(path), self.bucket, prefix + path.relative_to(source).as_posix()
                )

    def _download(self, key: str, beside: Path) -> Path:
        """The artifact's files in a new staging folder next to `beside`."""
        prefix = self._object_prefix(key)
        names = self._object_names(key)
        if not names:
            raise ArtifactNotFound(f"no artifact {key} in s3://{self.bucket}/{self.prefix}")
        beside.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=beside.parent, prefix=STAGING_PREFIX))
        try:
            with _bucket_errors(self.bucket):
                for name in names:
                    target = staging / artifact_key_check(name[len(prefix) :])
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.client.download_file(self.bucket, name, str(target))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def get_folder(self, key: str, destination: Path) -> None:
        destination = Path(destination)
        _replace_folder(self._download(key, destination), destination)

    def exists(self, key: str) -> bool:
        return bool(self._object_names(key, limit=1))

    def _delete_objects(self, names: list[str]) -> None:
        for start in range(0, len(names), 1000):  # S3's limit per request
            batch = names[start : start + 1000]
            with _bucket_errors(self.bucket):
                self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": name} for name in batch], "Quiet": True},
                )

    def delete(self, key: str) -> None:
        self._delete_objects(self._object_names(key))

    def local_folder(self, key: str) -> Path:
        cached = self.cache_dir / artifact_key_check(key)
        # The folder appears only by the rename of a complete download, and is never replaced:
        # a process may be reading it. Of two processes downloading at once, one keeps its copy.
        if not cached.is_dir():
            staging = self._download(key, cached)
            try:
                staging.rename(cached)
            except OSError:
                if not cached.is_dir():
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return cached


_stores: dict[tuple, ArtifactStore] = {}
_stores_lock = threading.Lock()


def artifact_store() -> ArtifactStore:
    """The store the settings configure: a bucket for an `s3://bucket/prefix` URL, otherwise
    the local FLYWHEEL_ARTIFACTS_DIR. One per configuration and process."""
    url = settings.FLYWHEEL_ARTIFACTS_URL
    configuration = (
        url,
        str(settings.FLYWHEEL_ARTIFACTS_DIR),
        str(settings.FLYWHEEL_ARTIFACTS_CACHE),
        settings.FLYWHEEL_S3_ENDPOINT_URL,
        settings.FLYWHEEL_S3_REGION,
    )
    with _stores_lock:
        if configuration not in _stores:
            _stores[configuration] = _store_from(url)
        return _stores[configuration]


def _store_from(url: str) -> ArtifactStore:
    if not url:
        return LocalArtifactStore(Path(settings.FLYWHEEL_ARTIFACTS_DIR))
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ArtifactStorageMisconfigured(
            f"FLYWHEEL_ARTIFACTS_URL must be s3://bucket[/prefix] or empty, not {url!r}"
        )
    return S3ArtifactStore(
        bucket=parsed.netloc,
        prefix=parsed.path,
        cache_dir=Path(settings.FLYWHEEL_ARTIFACTS_CACHE),
        endpoint_url=settings.FLYWHEEL_S3_ENDPOINT_URL,
        region=settings.FLYWHEEL_S3_REGION,
    )


def artifact_publish(*, folder: Path, key: str) -> str:
    """Store `folder` as the artifact `key`; the reference a version records for it."""
    artifact_store().put_folder(Path(folder), key)
    return artifact_reference(key)


def artifact_folder(reference: str | Path) -> Path:
    """A local folder holding what `reference` names: the artifact (fetched into the cache
    when the store is a bucket), or the folder itself when it is a plain path."""
    key = artifact_key(str(reference))
    if key is None:
        return Path(reference)
    return artifact_store().local_folder(key)
