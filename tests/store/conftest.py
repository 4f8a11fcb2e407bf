"""Store test fixtures: backends (memory, local path, file://, S3 on a moto server)."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

BUCKET = "mc-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    opts = {
        "endpoint_url": endpoint,
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    import s3fs

    fs = s3fs.S3FileSystem(**opts)
    fs.call_s3("create_bucket", Bucket=BUCKET)
    yield {"endpoint": endpoint, "storage_options": opts}
    server.stop()


@pytest.fixture(params=["memory", "local", "file", "s3"])
def backend(request, tmp_path):
    """(url factory, storage_options) for each backend."""
    kind = request.param
    if kind == "s3":
        ms = request.getfixturevalue("moto_server")
        prefix = f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}"
        return (lambda name: f"{prefix}/{name}"), ms["storage_options"]
    if kind == "memory":
        prefix = f"memory://mc-{uuid.uuid4().hex[:10]}"
        return (lambda name: f"{prefix}/{name}"), None
    if kind == "local":
        return (lambda name: str(tmp_path / name)), None
    return (lambda name: f"file://{tmp_path / name}"), None


@pytest.fixture
def backend_for(request, tmp_path):
    """backend_for(kind) -> (url, storage_options) for one tree."""

    def make(kind: str):
        if kind == "s3":
            ms = request.getfixturevalue("moto_server")
            return f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}/t", ms["storage_options"]
        if kind == "memory":
            return f"memory://mc-{uuid.uuid4().hex[:10]}/t", None
        return str(tmp_path / f"t-{uuid.uuid4().hex[:6]}"), None

    return make
