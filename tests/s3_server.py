"""A real S3-compatible server for the artifact store's tests: moto's server on a free port of
this machine, with one empty bucket, reachable by worker subprocesses too."""

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
from moto.server import ThreadedMotoServer

# moto accepts any credentials; boto3 still needs some to sign its requests.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "flywheel-test", "AWS_SECRET_ACCESS_KEY": "flywheel-test"}
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Bucket:
    endpoint_url: str
    name: str
    client: object  # a boto3 S3 client, to look into the bucket behind the store's back

    def object_names(self, prefix: str = "") -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for item in listing.get("Contents", []))


@contextmanager
def s3_bucket() -> Iterator[S3Bucket]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    # The server logs every request it answers; a failing test's output needs none of them.
    request_log = logging.getLogger("werkzeug")
    level = request_log.level
    request_log.setLevel(logging.WARNING)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint_url = f"http://{host}:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        name = f"flywheel-artifacts-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=name)
        yield S3Bucket(endpoint_url=endpoint_url, name=name, client=client)
    finally:
        server.stop()
        request_log.setLevel(level)


def use_bucket(*, bucket: S3Bucket, prefix: str, cache_dir, settings, monkeypatch) -> str:
    """Point this process (settings) and the workers it starts (environment) at `bucket`;
    the artifacts URL."""
    url = f"s3://{bucket.name}/{prefix}"
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("FLYWHEEL_ARTIFACTS_URL", url)
    monkeypatch.setenv("FLYWHEEL_S3_ENDPOINT_URL", bucket.endpoint_url)
    settings.FLYWHEEL_ARTIFACTS_URL = url
    settings.FLYWHEEL_S3_ENDPOINT_URL = bucket.endpoint_url
    settings.FLYWHEEL_S3_REGION = REGION
    settings.FLYWHEEL_ARTIFACTS_CACHE = cache_dir
    return url
