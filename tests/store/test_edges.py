"""Messages at the edges (issue 13, item 8): the storage failing, a tree missing its root,
and inputs that are not plain files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import mcstore
from mcruntime.errors import InputError
from mcruntime.ingest import scan
from mcstore.s3 import S3Backend
from tests.store.helpers import DIM, gister


class FailingFS:
    """An s3fs stand-in whose every request gets a persistent HTTP 500."""

    protocol = "s3"

    def _fail(self, *a, **k):
        import botocore.exceptions

        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "InternalError", "Message": "We encountered an internal error"}},
            "GetObject",
        )

    cat_file = pipe_file = exists = ls = find = _fail

    def invalidate_cache(self, *a):
        pass


def test_a_failing_service_names_the_tree_and_says_it_can_resume():
    be = S3Backend("s3://bucket/notes.mc", {}, fs=FailingFS(), root="bucket/notes.mc")
    with pytest.raises(mcstore.StoreAccessError) as e:
        be.read("log/head")
    msg = str(e.value)
    assert (
        "s3://bucket/notes.mc" in msg and "InternalError" in msg and "run the command again" in msg
    )
    with pytest.raises(mcstore.StoreAccessError):
        be.put_if_absent("log/00000000000000000002.json", b"x")


def test_a_tree_without_its_root_is_damage_for_every_command(tmp_path):
    url = str(tmp_path / "t.mc")
    mcstore.create(url, dim=DIM, block=4, epoch=64).append(np.arange(10), gister=gister, source="a")
    os.unlink(Path(url) / "zarr.json")
    for attempt in (
        lambda: mcstore.open(url),
        lambda: mcstore.create(url, dim=DIM, block=4, epoch=64),
        lambda: mcstore.verify(url),
    ):
        with pytest.raises(mcstore.CorruptTree, match=r"zarr\.json is missing"):
            attempt()


def test_a_fifo_in_a_folder_is_skipped_with_a_reason(tmp_path):
    (tmp_path / "a.txt").write_text("hello there")
    os.mkfifo(tmp_path / "pipe")
    found = scan([str(tmp_path)])
    assert [Path(i.name).name for i in found.inputs] == ["a.txt"]
    assert len(found.skipped) == 1 and "not a regular file" in str(found.skipped[0])


def test_a_symlink_loop_says_so(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(InputError, match="loop of symbolic links"):
        scan([str(loop)])


def test_a_file_where_a_tree_should_be(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("my own notes")
    with pytest.raises(mcstore.TreeNotFound, match="is a file"):
        mcstore.open(str(f))
    with pytest.raises(mcstore.TreeExists, match="is a file"):
        mcstore.create(str(f), dim=DIM)
    assert f.read_text() == "my own notes"


def test_destroy_removes_a_tree_and_nothing_else(tmp_path):
    url = str(tmp_path / "t.mc")
    mcstore.create(url, dim=DIM).append(np.arange(40), gister=gister, source="a")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(mcstore.TreeNotFound):
        mcstore.destroy(str(other))
    assert (other / "keep.txt").exists()
    mcstore.destroy(url)
    assert not Path(url).exists()
    mem = "memory://destroy-me/t.mc"
    mcstore.create(mem, dim=DIM)
    mcstore.destroy(mem)
    with pytest.raises(mcstore.TreeNotFound):
        mcstore.open(mem)
