"""Session.remember_turns: a question and its answer (or any run of chat turns) are one commit,
all stored or none (issue 22, item 5), reading exactly as separate appends would."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import mcstore
from mcruntime import InputError, Session
from mcruntime.render import render_turn
from tests.runtime.test_session import check, prose


def _session(base, url):
    return Session(url, model=base, window=512)


def test_a_turn_pair_is_one_commit_and_the_session_stays_current(base, tmp_path):
    url = str(tmp_path / "t.mc")
    s = _session(base, url)
    s.ingest(prose(600, 3), source="notes")
    v = s.tree.version
    s.remember_turn("Where is the key?", "Under the red stone.")
    new = [e.message for e in s.tree.log(limit=s.tree.version - v)]
    assert [m for m in new if not m.startswith("retrieval")] == ["chat: user + assistant"]
    segs = s.tree.segments()
    assert [g.source for g in segs[-2:]] == ["chat:user", "chat:assistant"]
    tok = base.tokenizer
    for g, (role, text) in zip(
        segs[-2:],
        [("user", "Where is the key?"), ("assistant", "Under the red stone.")],
        strict=True,
    ):
        assert tok.decode(s.tree.tokens(g.start, g.stop).tolist()) == render_turn(role, text)
    check(s)  # the working context covers the tree, the window's vectors match it
    # what one commit wrote reads as two appends would have
    other = _session(base, str(tmp_path / "u.mc"))
    other.ingest(prose(600, 3), source="notes")
    for role, text in [("user", "Where is the key?"), ("assistant", "Under the red stone.")]:
        other.append_ids(tok.encode(render_turn(role, text)), source=f"chat:{role}")
    a, b = mcstore.open(url), mcstore.open(str(tmp_path / "u.mc"))
    assert np.array_equal(a.tokens(0, a.length), b.tokens(0, b.length))
    for level in range(1, a.num_levels):
        assert np.array_equal(a.gists(level, 0, a.num_nodes(level)),
                              b.gists(level, 0, b.num_nodes(level)))  # fmt: skip
    with pytest.raises(InputError):
        s.remember_turns([])
    with pytest.raises(InputError):
        s.remember_turns([("system", "no")])


def test_a_conflicting_pair_stores_nothing(base, tmp_path):
    url = str(tmp_path / "t.mc")
    a = _session(base, url)
    a.ingest(prose(200, 1), source="x")
    b = _session(base, url)
    a.ingest(prose(200, 2), source="y")  # b's view is now stale
    before = mcstore.open(url)
    with pytest.raises(mcstore.CommitConflict):
        b.remember_turn("lost question", "lost answer")
    after = mcstore.open(url)
    assert (after.version, after.length) == (before.version, before.length)
    assert [g.source for g in after.segments()] == ["x", "y"]


def test_a_writer_in_between_never_splits_a_pair(base, tmp_path, monkeypatch):
    """Another writer commits right after each of b's commits: the question is either stored
    with its answer or not at all (two commits used to leave the question alone)."""
    url = str(tmp_path / "t.mc")
    a = _session(base, url)
    a.ingest(prose(200, 1), source="x")
    b = _session(base, url)
    real = mcstore.Tree.append_many

    def append_many(self, parts, **kw):
        v = real(self, parts, **kw)
        if self is b.tree:
            mcstore.open(url, "a").commit_objects({"other": b"writer"}, message="other writer")
        return v

    monkeypatch.setattr(mcstore.Tree, "append_many", append_many)
    # a commit after the pair's (the retrieval index's) may meet the other writer: allowed
    with contextlib.suppress(mcstore.CommitConflict):
        b.remember_turn("a question", "its answer")
    sources = [g.source for g in mcstore.open(url).segments()]
    assert sources == ["x", "chat:user", "chat:assistant"], sources
