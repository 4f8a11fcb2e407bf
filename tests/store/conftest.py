"""Store test fixtures: backends (memory, local path, file://, S3 on a moto server and S3 on a
SeaweedFS server: two independent S3 implementations)."""

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


@pytest.fixture(scope="session")
def seaweed_server(request):
    """A SeaweedFS server (tests/store/seaweed.py) for the session; skipped, with the reason,
    where it cannot start."""
    from tests.store import seaweed

    try:
        server = seaweed.start(BUCKET)
    except seaweed.SeaweedUnavailable as e:
        pytest.skip(f"SeaweedFS S3 server cannot run here: {e}")
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(
            f"SeaweedFS {server.version} serving S3 on {server.endpoint} "
            f"(started in {server.startup_s:.1f} s)"
        )
    yield {
        "endpoint": server.endpoint,
        "storage_options": server.storage_options,
        "version": server.version,
    }
    server.stop()


# backend kind -> the fixture of its S3 server
S3_SERVERS = {"s3": "moto_server", "seaweed": "seaweed_server"}


@pytest.fixture(params=["memory", "local", "file", "s3", "seaweed"])
def backend(request, tmp_path):
    """(url factory, storage_options) for each backend ("s3" is moto, "seaweed" SeaweedFS)."""
    kind = request.param
    if kind in S3_SERVERS:
        ms = request.getfixturevalue(S3_SERVERS[kind])
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
        if kind in S3_SERVERS:
            ms = request.getfixturevalue(S3_SERVERS[kind])
            return f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}/t", ms["storage_options"]
        if kind == "memory":
            return f"memory://mc-{uuid.uuid4().hex[:10]}/t", None
        return str(tmp_path / f"t-{uuid.uuid4().hex[:6]}"), None

    return make
