"""Backend conformance: every backend class directly, through ``mcstore.testing.BackendTests``
(zarr's ``StoreTests`` pattern: the library ships the tests, each backend's suite subclasses
them): put-if-absent and its races, atomic replace, ranged and batched reads, missing objects,
listing, walking, deleting, request counts and the capability flags."""

from __future__ import annotations

import uuid

import pytest

import mcstore
from mcstore.backend import Backend, MemoryBackend
from mcstore.local import LocalBackend
from mcstore.s3 import S3Backend
from mcstore.testing import BackendTests, LoggingBackend
from tests.store.conftest import BUCKET


class TestMemory(BackendTests):
    expected_class = MemoryBackend

    def backend(self):
        return mcstore.open_backend(f"memory://be-{uuid.uuid4().hex[:10]}/root")


class TestLocal(BackendTests):
    expected_class = LocalBackend

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path):
        self.folder = tmp_path

    def backend(self):
        return mcstore.open_backend(str(self.folder / uuid.uuid4().hex[:8]))


class TestFileURL(TestLocal):
    def backend(self):
        return mcstore.open_backend(f"file://{self.folder / uuid.uuid4().hex[:8]}")


class TestS3Moto(BackendTests):
    expected_class = S3Backend
    concurrent_io = True

    @pytest.fixture(autouse=True)
    def _server(self, moto_server):
        self.so = moto_server["storage_options"]

    def backend(self):
        return mcstore.open_backend(f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}/root", self.so)


class TestS3Seaweed(TestS3Moto):
    @pytest.fixture(autouse=True)
    def _server(self, seaweed_server):
        self.so = seaweed_server["storage_options"]


class TestGenericFsspec(BackendTests):
    """The class any other fsspec filesystem gets: crash-safe for one writer, not race-safe."""

    atomic_create = False

    def backend(self):
        return Backend(f"memory://generic-{uuid.uuid4().hex[:8]}/root")


def test_a_tree_works_through_a_wrapper(backend):
    url, so = backend
    import numpy as np

    from tests.store.helpers import DIM, gister

    log = LoggingBackend(mcstore.backend_for(url("t"), so))
    t = mcstore.create(log, dim=DIM, block=4, epoch=64)
    t.append(np.arange(100), gister=gister, source="a")
    assert mcstore.open(url("t"), storage_options=so).tokens().tolist() == list(range(100))
    assert any(c.op == "put_if_absent" and str(c.target).startswith("log/") for c in log.calls)


def test_unknown_scheme_is_one_clear_error():
    with pytest.raises(mcstore.InvalidArgument, match="unknown storage scheme"):
        mcstore.open_backend("nosuchscheme://x/y")
