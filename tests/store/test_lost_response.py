"""A commit whose record PUT lands while every answer to it is lost (issue 22, item 4).

On S3 a dropped connection after the PUT reached the server looks like a failed PUT; s3fs
retries, and after about 40 s of drops it gives up with an error. The commit did land. The writer
must read its record back before saying anything: our nonce there means committed. If even the
read fails, the error says the outcome is unknown, and the handle recognises a repeat of the same
change instead of storing it twice. ``create`` likewise must not report its own first record (or
root) as another tree's.
"""

from __future__ import annotations

import numpy as np
import pytest

import mcstore
from mcstore.backend import RESUME
from mcstore.testing import BackendWrapper
from tests.store.helpers import DIM, gister

B, E = 4, 64


class LostAnswers(BackendWrapper):
    """Every put-if-absent of a key matching ``prefix`` reaches the store, and then its answer
    is lost: ``mode="error"`` raises what s3fs raises once its retries are spent;
    ``mode="taken"`` answers "taken", as s3fs' retry of a PUT that had landed gets 412.
    While ``blind``, reads of those keys fail too (a GET; a HEAD still answers)."""

    def __init__(self, inner, prefix: str = "log/0", mode: str = "error"):
        super().__init__(inner)
        self.prefix, self.mode = prefix, mode
        self.blind = False
        self.lost = 0

    def _hit(self, rel) -> bool:
        return str(rel).startswith(self.prefix)

    def put_if_absent(self, rel, data):
        ok = self.inner.put_if_absent(rel, data)
        if not self._hit(rel):
            return ok
        self.lost += 1
        if self.mode == "taken":
            return self.inner.put_if_absent(rel, data)
        raise mcstore.StoreAccessError(
            f"{self.url}: cannot reach the storage (ServerDisconnectedError); {RESUME}"
        )

    def read(self, rel, *, limit=None):
        if self.blind and self._hit(rel):
            raise mcstore.StoreAccessError(f"{self.url}: cannot reach the storage; {RESUME}")
        return super().read(rel, limit=limit)


def _tree(backend, name="t.mc"):
    mk, so = backend
    url = mk(name)
    mcstore.create(url, dim=DIM, block=B, epoch=E, storage_options=so)
    return url, so


def _sources(url, so) -> list[str]:
    return [s.source for s in mcstore.open(url, storage_options=so).segments()]


def test_a_commit_whose_every_answer_was_lost_is_reported_committed(backend):
    url, so = _tree(backend)
    be = LostAnswers(mcstore.backend_for(url, so))
    t = mcstore.open(be, "a")
    v = t.append(np.arange(10), gister=gister, source="a")
    assert be.lost == 1 and v == 2 and t.version == 2
    v = t.append(np.arange(5), gister=gister, source="b")  # the same handle goes on
    assert v == 3
    assert _sources(url, so) == ["a", "b"]
    mcstore.verify(url, storage_options=so)


def test_an_unknown_outcome_says_so_and_a_retry_is_not_stored_twice(backend):
    url, so = _tree(backend)
    be = LostAnswers(mcstore.backend_for(url, so))
    t = mcstore.open(be, "a")
    be.blind = True  # the record cannot be read back either
    with pytest.raises(mcstore.StoreError) as e:
        t.append(np.arange(10), gister=gister, source="a")
    msg = str(e.value)
    assert "unknown" in msg and "refresh()" in msg, msg
    assert "nothing past the tree's last commit changed" not in msg, msg
    assert isinstance(e.value, mcstore.CommitUnknown) and e.value.version == 2
    # still blind: the handle will not commit anything while it cannot tell
    with pytest.raises(mcstore.CommitUnknown):
        t.append(np.arange(10), gister=gister, source="a")
    be.blind = False
    be.prefix = "nothing"  # the storage answers again
    t.refresh()  # tells: version 2 is ours
    assert t.version == 2 and t.records(2, 2)[0].rec["nonce"] == e.value.nonce
    assert t.append(np.arange(10), gister=gister, source="a") == 2  # the retry: recognised
    assert _sources(url, so) == ["a"]
    assert t.append(np.arange(10), gister=gister, source="a") == 3  # a new append is new
    assert _sources(url, so) == ["a", "a"]


def _landed_unseen(backend):
    """A handle whose append of ``arange(10)`` as "a" landed while every answer was lost
    (the outcome is unknown to it); then the storage answers again."""
    url, so = _tree(backend)
    be = LostAnswers(mcstore.backend_for(url, so))
    t = mcstore.open(be, "a")
    be.blind = True
    with pytest.raises(mcstore.StoreError):
        t.append(np.arange(10), gister=gister, source="a")
    be.blind, be.prefix = False, "nothing"
    return url, so, t


def test_a_retry_on_the_same_handle_without_refresh(backend):
    url, so, t = _landed_unseen(backend)
    assert t.append(np.arange(10), gister=gister, source="a") == 2  # not a CommitConflict
    assert _sources(url, so) == ["a"]


def test_a_different_change_after_an_unknown_outcome_builds_on_it(backend):
    url, so, t = _landed_unseen(backend)
    assert t.append(np.arange(4), gister=gister, source="b") == 3
    assert _sources(url, so) == ["a", "b"]


def test_a_redaction_retried_after_an_unknown_outcome_is_not_committed_twice(backend):
    url, so = _tree(backend)
    be = LostAnswers(mcstore.backend_for(url, so), prefix="nothing")
    t = mcstore.open(be, "a")
    v = t.append(np.arange(40), gister=gister, source="a")
    be.prefix, be.blind = "log/0", True
    edits = [(3, np.full(5, 7))]
    with pytest.raises(mcstore.CommitUnknown):
        t.redact(edits, gister=gister, message="forget")
    be.blind, be.prefix = False, "nothing"
    assert t.redact(edits, gister=gister, message="forget") == v + 1  # recognised, not again
    assert mcstore.open(url, storage_options=so).version == v + 1
    assert t.redact([(3, np.full(5, 8))], gister=gister) == v + 2  # a new one is new


@pytest.mark.parametrize("mode", ["error", "taken"])
@pytest.mark.parametrize("key", ["log/0", "zarr.json"])
def test_create_with_lost_answers_creates_the_tree(backend, mode, key):
    mk, so = backend
    url = mk("c.mc")
    be = LostAnswers(mcstore.backend_for(url, so), prefix=key, mode=mode)
    t = mcstore.create(be, dim=DIM, block=B, epoch=E)  # not TreeExists, not an error
    assert be.lost == 1 and t.version == 1
    t.append(np.arange(3), gister=gister, source="a")
    assert _sources(url, so) == ["a"]
    mcstore.verify(url, storage_options=so)
