"""Damage the store reports as damage (CorruptTree, `mc verify` exit 6, one line), not as the
Python error that tripped over it (issue 22, item 10)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import mcstore
from mcstore import format as F
from tests.cli.helpers import one_error_line, run_mc
from tests.store.helpers import DIM, gister


@pytest.fixture
def tree(tmp_path):
    url = str(tmp_path / "t.mc")
    t = mcstore.create(url, dim=DIM, block=4, epoch=64)
    t.append(np.arange(90) % 1000, gister=gister, source="a")
    t.commit_objects({"index-a": b"hello", "index-b": b"world"}, message="objects")
    t.commit_objects({"index-c": b"again"}, message="a layer over the map")
    return url


def _edit_maps(url: str, change) -> int:
    """Edit every object-map blob and re-sign it, as an attacker who knows the format would."""
    n = 0
    for p in sorted((Path(url) / "meta").glob("objects-*")):
        m = F.decode_blob(p.read_bytes())
        change(m)
        p.write_bytes(F.encode_blob(m))
        n += 1
    return n


def _entries(m: dict) -> list[dict]:
    return list((m["set"] if m.get("layer") == 1 else m).values())


@pytest.mark.parametrize(
    "what,change",
    [
        ("path", lambda e: e.update(path=5)),
        ("path", lambda e: e.update(path=None)),
        ("size", lambda e: e.update(size="5")),
        ("sha256", lambda e: e.update(sha256=["x"])),
        ("entry", lambda e: e.clear()),
    ],
)
def test_a_crafted_object_map_entry_is_damage(tree, what, change):
    assert _edit_maps(tree, lambda m: [change(e) for e in _entries(m)]) == 2
    with pytest.raises(mcstore.CorruptTree, match="meta/objects-"):
        mcstore.verify(tree)
    r = run_mc(["verify", tree])
    assert r.code == mcstore.CorruptTree.exit_code == 6, r.err
    one_error_line(r.err, "meta/objects-", "damaged")
    assert "AttributeError" not in r.err and "unexpected" not in r.err


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(layers=[5]) if m.get("layer") == 1 else None,
        lambda m: m.update(set=[1, 2]) if m.get("layer") == 1 else None,
        lambda m: m.update(deleted=7) if m.get("layer") == 1 else None,
        lambda m: None if m.get("layer") == 1 else m.update({"x": 5}),
    ],
)
def test_a_crafted_object_map_layer_is_damage(tree, change):
    _edit_maps(tree, change)
    r = run_mc(["verify", tree])
    assert r.code == 6, r.err
    one_error_line(r.err, "meta/objects-", "damaged")


def test_head_hint_as_a_folder_is_damage(tree):
    head = Path(tree) / "log" / "head"
    if head.exists():
        head.unlink()
    os.mkdir(head)
    with pytest.raises(mcstore.CorruptTree, match="log/head"):
        mcstore.open(tree)
    for cmd in ("verify", "log", "info"):
        r = run_mc([cmd, tree])
        assert r.code == 6, (cmd, r.err)
        one_error_line(r.err, "log/head", "folder")
        assert "IsADirectoryError" not in r.err
