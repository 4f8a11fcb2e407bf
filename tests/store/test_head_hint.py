"""The head hint never goes backwards, and a lost newest record is never papered over
(issue 22, item 3).

The hint ``log/head`` is a shortcut for open and also evidence: a hint beyond the newest record
says records were lost. So it is written durably and only upwards (a gc or a slow writer must not
write back an older head), open lists past it, an append never takes a version number the hint
says was committed, and gc, which lists every object anyway, treats a writer's trace of a version
two past the newest record as proof of lost records instead of deleting it as debris.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import mcstore
from mcstore import format as F
from mcstore.records import write_head_hint
from mcstore.testing import BackendWrapper, GateBackend
from tests.store.helpers import DIM, gister

B, E = 4, 64


@pytest.fixture
def url(tmp_path) -> str:
    url = str(tmp_path / "h.mc")
    t = mcstore.create(url, dim=DIM, block=B, epoch=E)
    for i in range(3):
        t.append(np.arange(20) + i, gister=gister, source=f"s{i}")
    assert t.version == 4
    return url


def _hint(url: str) -> int:
    return int((Path(url) / "log" / "head").read_text())


def _lose(url: str, *keys: str) -> None:
    for k in keys:
        os.unlink(Path(url) / k)


def test_write_head_hint_never_lowers_the_hint(url):
    be = mcstore.backend_for(url)
    assert _hint(url) == 4
    write_head_hint(be, 2)
    assert _hint(url) == 4
    write_head_hint(be, 5)
    assert _hint(url) == 5


def test_gc_does_not_write_back_the_head_it_opened(url):
    """gc opens the tree at version 4; a writer commits 5 while gc works; the hint must not
    go back to 4 (then a lost record 5 would go unnoticed)."""
    gate = GateBackend(mcstore.backend_for(url), lambda op, _t: op == "walk", after=True)
    th = threading.Thread(target=mcstore.gc, args=(gate,))
    th.start()
    gate.wait()
    v = mcstore.open(url, "a").append(np.arange(5), gister=gister, source="late")
    assert v == 5
    gate.release()
    th.join()
    assert _hint(url) == 5
    _lose(url, F.log_key(5))  # the newest record is lost: open must say so, not show 4
    with pytest.raises(mcstore.CorruptTree, match="log/head"):
        mcstore.open(url)


def test_open_lists_past_a_stale_hint(url):
    (Path(url) / "log" / "head").write_text("2")
    assert mcstore.open(url).version == 4
    assert mcstore.open(url, "a").append([1, 2], gister=gister, source="x") == 5


def test_an_append_never_takes_a_version_the_hint_says_was_committed(url):
    """A handle opened at 4; another commits 5 (hint 5); record 5 is lost. The first handle's
    append must not commit a new version 5 over the loss."""
    a = mcstore.open(url, "a")
    mcstore.open(url, "a").append(np.arange(3), gister=gister, source="b")
    _lose(url, F.log_key(5))
    with pytest.raises(mcstore.CorruptTree, match="lost"):
        a.append(np.arange(3), gister=gister, source="a")
    assert not (Path(url) / F.log_key(5)).exists()


class _CrashAtRecord(BackendWrapper):
    def before(self, op, target):
        if op == "put_if_absent" and str(target).startswith("log/0"):
            raise KeyboardInterrupt  # the writer dies before its record


def test_gc_refuses_when_a_writers_trace_proves_records_were_lost(url):
    """Version 5 committed, a writer died making version 6 (its delta stays), then record 5
    and the hint are both lost: the tree reads as version 4. The delta of version 6 proves
    that 5 existed; gc must say so and delete nothing, not clear the evidence away."""
    mcstore.open(url, "a").append(np.arange(7), gister=gister, source="five")
    with pytest.raises(KeyboardInterrupt):
        mcstore.open(_CrashAtRecord(mcstore.backend_for(url)), "a").append(
            np.arange(9), gister=gister, source="six"
        )
    assert list(Path(url, "tail").glob("00000000000000000006-*"))
    _lose(url, F.log_key(5), "log/head")
    old = time.time() - 7200
    for p in Path(url).rglob("*"):
        os.utime(p, (old, old))
    before = sorted(str(p) for p in Path(url).rglob("*"))
    with pytest.raises(mcstore.CorruptTree, match="records were lost"):
        mcstore.gc(url)
    assert sorted(str(p) for p in Path(url).rglob("*")) == before
