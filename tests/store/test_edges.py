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


class RacingFS:
    """An S3 stand-in that answers 409 ConditionalRequestConflict to the first ``conflicts``
    conditional PUTs of a log record (another conditional write to it is in flight), as AWS
    does; then the name is taken by the other writer (412) or free, as set."""

    protocol = "s3"

    def __init__(self, conflicts: int, taken: bool):
        self.objects: dict[str, bytes] = {}
        self.conflicts, self.taken, self.attempts = conflicts, taken, 0

    def pipe_file(self, path, data, mode="overwrite"):
        import botocore.exceptions

        if "/log/" in path:
            self.attempts += 1
            if self.attempts <= self.conflicts:
                raise botocore.exceptions.ClientError(
                    {
                        "Error": {"Code": "ConditionalRequestConflict", "Message": "in flight"},
                        "ResponseMetadata": {"HTTPStatusCode": 409},
                    },
                    "PutObject",
                )
            if self.taken:
                self.objects.setdefault(path, b"theirs")
        if mode == "create" and path in self.objects:
            raise FileExistsError(path)
        self.objects[path] = bytes(data)

    def cat_file(self, path, **kw):
        return self.objects[path]

    def rm(self, path, **kw):
        self.objects.pop(path, None)

    def invalidate_cache(self, *a):
        pass


@pytest.mark.parametrize("taken", [False, True])
def test_a_racing_conditional_write_409_is_retried(taken):
    fs = RacingFS(conflicts=2, taken=taken)
    be = S3Backend("s3://bucket/r.mc", {"endpoint_url": "http://racing"}, fs=fs, root="bucket/r.mc")
    won = be.put_if_absent("log/00000000000000000002.json", b"ours")
    assert fs.attempts == 3 and won is (not taken)
    assert fs.objects["bucket/r.mc/log/00000000000000000002.json"] == (
        b"theirs" if taken else b"ours"
    )
