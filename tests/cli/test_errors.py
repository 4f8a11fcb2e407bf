"""Every error a person can act on: one `mc: …` line on stderr, no traceback (unless --debug),
its own exit code, and the tree exactly at its last commit (same version, same rows, verifies).

Exit codes (cli.main.EXIT_CODES): 2 usage/invalid argument, 3 no tree, 5 commit conflict,
6 corrupt object, 7 binding mismatch, 8 storage access (test_s3.py), 11 bad input, 12 window
too small, 21 unknown model (mcmodels' own codes), 130 interrupted, 1 unexpected.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mcruntime.session
import mcstore
from tests.cli.helpers import (
    ROOT,
    TINY,
    mc_env,
    multi_chunk_docs,
    one_error_line,
    run_mc,
    run_proc,
    state,
    verify_ok,
)


def fails(args, code, *needles, tree=None, input=None, exists=True) -> str:
    """Run `mc ARGS`; it must fail with ``code`` and one line holding ``needles``, leaving
    ``tree`` (when given) exactly as it was — or still absent when ``exists`` is False."""
    before = state(tree) if tree and exists else None
    r = run_mc(args, input=input)
    assert r.code == code, (r.code, r.out, r.err)
    line = one_error_line(r.err, *needles)
    if tree is not None:
        if exists:
            assert state(tree) == before
            verify_ok(tree)
        else:
            assert not os.path.exists(tree), "a failed command left a tree behind"
    return line


def test_missing_tree(tmp_path):
    missing = str(tmp_path / "nope.mc")
    for cmd in (["chat", missing, "--once", "hi", *TINY], ["info", missing], ["log", missing],
                ["show", missing], ["verify", missing], ["tag", missing, "x"]):  # fmt: skip
        fails(cmd, mcstore.TreeNotFound.exit_code, missing, "no MegaContext tree", tree=missing,
              exists=False)  # fmt: skip


def test_wrong_url_scheme(tmp_path, docs):
    url = "foo://bucket/x.mc"
    for cmd in (["info", url], ["chat", url, "--once", "hi", *TINY],
                ["ingest", url, docs / "a.txt", *TINY]):  # fmt: skip
        fails(cmd, 2, url, "unknown storage scheme 'foo://'")


def test_library_errors_behind_the_lines(tmp_path):
    with pytest.raises(mcstore.InvalidArgument, match="unknown storage scheme 'foo://'"):
        mcstore.open("foo://bucket/x.mc")
    with pytest.raises(mcstore.InvalidArgument, match="unknown storage scheme"):
        mcstore.create("nope://x.mc", dim=8)


def test_failing_fast_does_not_load_torch():
    """Scanning input and the runtime's errors are importable without torch, so `mc` reports
    a bad URL, a missing tree or bad input in about a second, before any model loads."""
    code = (
        "import sys, mcruntime, mcruntime.ingest, cli.main; cli.main._register(); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=mc_env(), capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert p.returncode == 0, p.stderr


def test_binding_mismatch(tmp_path, docs):
    # a tree written with another tokenizer (same width as the tiny model: d=64)
    url = str(tmp_path / "other-tok.mc")
    binding = {
        "tokenizer": {"name": "other-bpe", "hash": "0" * 16},
        "gistnet": {"id": "g", "hash": "h", "dim": 64, "dtype": "float16"},
    }
    t = mcstore.create(url, dim=64, block=4, epoch=64, binding=binding)
    t.append(np.arange(100) % 50, gister=_gister(64), source="x.txt")
    code = mcstore.BindingMismatch.exit_code
    fails(["chat", url, "--once", "hi", *TINY], code, url, "tokenizer 'other-bpe'", tree=url)
    fails(["ingest", url, docs / "a.txt", *TINY], code, url, "matching model", tree=url)
    # a tree of another width
    url = str(tmp_path / "narrow.mc")
    t = mcstore.create(url, dim=8, block=4, epoch=64, binding=None)
    t.append(np.arange(40), gister=_gister(8), source="y.txt")
    fails(["chat", url, "--once", "hi", *TINY], code, url, "8-wide gists", "64-wide", tree=url)


def _gister(dim):
    """A numpy gister of width ``dim`` (level 1 reads token ids, higher levels gists)."""

    def g(level, children):
        n = children.shape[0]
        return np.full((n, dim), 0.01 * level, dtype=np.float16)

    return g


def test_commit_conflict(tree, monkeypatch):
    """Another writer commits while `mc chat` answers: the chat's commit loses, cleanly."""
    other = mcstore.open(tree, "a")
    original = mcruntime.session.Session.remember_turns

    def another_writer_first(self, turns, **kw):
        monkeypatch.setattr(mcruntime.session.Session, "remember_turns", original)
        from mcruntime.ingest import ingest_text

        w = mcruntime.session.Session(other, model=self.base, gistnet=self.gistnet, window=2048)
        ingest_text(w, "written by someone else meanwhile\n", "other.txt")
        return original(self, turns, **kw)

    monkeypatch.setattr(mcruntime.session.Session, "remember_turns", another_writer_first)
    v0 = state(tree)[0]
    r = run_mc(["chat", tree, "--once", "hi", "--max-new-tokens", "4", *TINY])
    assert r.code == mcstore.CommitConflict.exit_code, r.err
    one_error_line(r.err, tree, "another writer", "this turn was not saved: ask again")
    v, _, segs = state(tree)
    assert v == v0 + 1 and segs[-1][2] == "other.txt"  # the other writer's commit, nothing else
    verify_ok(tree)


def test_a_conflict_after_the_turn_landed_says_it_was_saved(tree, monkeypatch):
    """The question and answer are one commit; when only the retrieval index's commit after
    it meets another writer, the turn is in and `mc chat` says so (asking again would store
    the question twice)."""
    import mcruntime.indexing

    def lost(self):
        raise mcstore.CommitConflict("the index chunk met another writer")

    monkeypatch.setattr(mcruntime.indexing.NodeIndex, "persist", lost)
    v0 = state(tree)[0]
    r = run_mc(["chat", tree, "--once", "hi", "--max-new-tokens", "4", *TINY])
    assert r.code == mcstore.CommitConflict.exit_code, r.err
    one_error_line(r.err, "this turn was saved")
    v, _, segs = state(tree)
    assert v == v0 + 1 and [x[2] for x in segs[-2:]] == ["chat:user", "chat:assistant"]


def test_commit_conflict_mid_ingest_then_resume(tmp_path, monkeypatch):
    files = multi_chunk_docs(tmp_path / "many", files=2, chars=1500)
    url = str(tmp_path / "c.mc")
    assert run_mc(["ingest", url, files / "doc00.txt", *TINY]).code == 0
    original = mcruntime.session.Session.append_ids
    calls = []

    def another_writer_before_the_third_chunk(self, ids, **kw):
        calls.append(1)
        if len(calls) == 3:
            w = mcruntime.session.Session(url, model=self.base, gistnet=self.gistnet)
            w.append_ids([65] * 40, source="other.txt")
        return original(self, ids, **kw)

    monkeypatch.setattr(
        mcruntime.session.Session, "append_ids", another_writer_before_the_third_chunk
    )
    r = run_mc(["ingest", url, files, "--chunk-tokens", "256", *TINY])
    assert r.code == mcstore.CommitConflict.exit_code
    one_error_line(r.err, url, "another writer", "2 commit(s) landed", "run the same")
    segs = state(url)[2]
    assert [s[2].split(" (tokens ")[0] for s in segs[-3:]] == [f"{files}/doc01.txt"] * 2 + [
        "other.txt"
    ]  # the parts of a file longer than a chunk say which tokens they hold
    verify_ok(url)
    monkeypatch.setattr(mcruntime.session.Session, "append_ids", original)
    r = run_mc(["ingest", url, files, "--chunk-tokens", "256", *TINY])
    assert r.code == 0 and "1 already present" in r.out, r.err
    tags = [s[3] for s in state(url)[2] if s[3]]
    assert len(tags) == len(set(tags))  # the resumed file's chunks, each once


def _flip(path, at=None):
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def test_corrupt_tail_and_truncated_tail(tree, tmp_path):
    head_tail = sorted(glob.glob(f"{tree}/tail/*.bin"))[-1]
    key = "tail/" + os.path.basename(head_tail)
    before = state(tree)
    _flip(head_tail)
    code = mcstore.CorruptTree.exit_code
    for cmd in (["chat", tree, "--once", "hi", *TINY], ["verify", tree], ["show", tree]):
        r = run_mc(cmd)
        assert r.code == code, (cmd, r.err)
        one_error_line(r.err, tree, key, "restore that object")
    r = run_mc(["info", tree])  # info reads only the commit record: it still describes the tree
    assert r.code == 0 and f"version   {before[0]}" in r.out
    _flip(head_tail)  # restored from a copy: everything is as it was, nothing was written
    assert state(tree) == before
    verify_ok(tree)
    # a truncated object is caught the same way
    data = Path(head_tail).read_bytes()
    Path(head_tail).write_bytes(data[: len(data) // 2])
    r = run_mc(["chat", tree, "--once", "hi", *TINY])
    assert r.code == code
    one_error_line(r.err, tree, key)
    Path(head_tail).write_bytes(data)
    assert state(tree) == before


def test_corrupt_shard(tmp_path):
    """A full shard (the tree is longer than one epoch) with a flipped byte."""
    url = str(tmp_path / "big.mc")
    text = "".join(
        f"Entry {i}: the tide table for day {i} reads {i * 37 % 100}.\n" for i in range(300)
    )
    r = run_mc(["ingest", url, "-", *TINY], input=text)
    assert r.code == 0, r.err
    code = mcstore.CorruptTree.exit_code
    # a session reads what its focus needs: the oldest history is level-2 gists, so a bad
    # level-2 shard stops chat; old raw tokens are only read when focus or verify needs them
    for rel, cmds in (
        ("arrays/gists_2/c/0/0", (["chat", url, "--once", "hi", *TINY], ["verify", url])),
        ("arrays/tokens/c/0", (["verify", url],)),
    ):
        shard = f"{url}/{rel}"
        assert os.path.exists(shard), os.listdir(os.path.dirname(shard))
        before = state(url)
        _flip(shard, at=200)
        for cmd in cmds:
            r = run_mc(cmd)
            assert r.code == code, (cmd, r.err)
            one_error_line(r.err, url, rel, "restore that object")
        _flip(shard, at=200)
        assert state(url) == before


def test_bad_input(tmp_path, tree):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("  \n\n")
    (tmp_path / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    (tmp_path / "bins").mkdir()
    (tmp_path / "bins" / "a.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "bins" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    (tmp_path / "bins" / "c.txt").write_text("")
    (tmp_path / "hollow").mkdir()
    new = str(tmp_path / "new.mc")
    code = 11
    for url, exists in ((tree, True), (new, False)):  # an existing tree, and one never created
        kw = {"tree": url, "exists": exists}
        fails(["ingest", url, tmp_path / "empty.txt", *TINY], code, "empty.txt is empty", **kw)
        fails(["ingest", url, tmp_path / "blank.txt", *TINY], code, "blank.txt is empty", **kw)
        fails(["ingest", url, "-", *TINY], code, "stdin is empty", input=b"", **kw)
        fails(["ingest", url, "-", *TINY], code, "stdin is not valid UTF-8 (byte 2)",
              input=b"ok\xff\xfe", **kw)  # fmt: skip
        fails(["ingest", url, tmp_path / "latin1.txt", *TINY], code,
              "latin1.txt is not valid UTF-8 (byte 3)", **kw)  # fmt: skip
        fails(["ingest", url, tmp_path / "bins", *TINY], code,
              "all 3 files were skipped (2 binary, 1 empty)", **kw)  # fmt: skip
        fails(["ingest", url, tmp_path / "hollow", *TINY], code, "no files to ingest in", **kw)
        fails(["ingest", url, tmp_path, "--include", "*.rst", *TINY], code,
              "no files matching --include/--exclude", **kw)  # fmt: skip
        fails(["ingest", url, tmp_path / "nowhere", *TINY], code, "nowhere: no such file", **kw)
    fails(["chat", tree, "--once", "  ", *TINY], code, "question", "empty", tree=tree)


def test_window_too_small(tree):
    code = 12
    line = fails(["chat", tree, "--once", "hi", "--window", "256", *TINY], code,
                 "for the memory", "pass --window", tree=tree)  # fmt: skip
    assert not re.search(r"(^|\s)-\d", line), line  # no negative counts
    # mc show --query reads as a session does: the same error for a question that cannot fit
    fails(["show", tree, "--window", "256", "--query", "why " * 100, *TINY], code,
          "the question (400 tokens)", "--window", tree=tree)  # fmt: skip
    # out of the option's range: a usage error, still one line
    fails(["chat", tree, "--once", "hi", "--window", "100", *TINY], 2,
          "'--window': 100 is not in the range", "mc chat --help", tree=tree)  # fmt: skip


def test_usage_errors_are_one_line(tree):
    fails(["chat"], 2, "Missing argument 'TREE'")
    fails(["frobnicate"], 2, "No such command 'frobnicate'")
    fails(["info", tree, "-o", "novalue"], 2, "is not key=value", tree=tree)


def test_unknown_model(tree):
    fails(["chat", tree, "--once", "hi", "--model", "no-such-model"], 21, "no-such-model",
          tree=tree)  # fmt: skip


def test_ctrl_c_in_chat_leaves_the_tree(tree, monkeypatch):
    def interrupted(self, *a, **kw):
        yield "partial"
        raise KeyboardInterrupt

    monkeypatch.setattr(mcruntime.session.Session, "chat_stream", interrupted)
    line = fails(["chat", tree, "--once", "hi", *TINY], 130, tree=tree)
    assert line == "mc: interrupted; the tree is at its last commit"


def test_unexpected_error_and_debug(tree, monkeypatch):
    def boom(*a, **kw):
        raise RuntimeError("a bug")

    monkeypatch.setattr(mcstore, "verify", boom)
    fails(["verify", tree], 1, "unexpected error: RuntimeError: a bug", "--debug")
    for args in (["--debug", "verify", tree], ["verify", tree, "--debug"]):
        r = run_mc(args)
        assert r.code == 1 and "Traceback" in r.err and 'raise RuntimeError("a bug")' in r.err
        assert r.err_lines[-1].startswith("mc: unexpected error")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(tmp_path, monkeypatch, how):
    missing = str(tmp_path / "nope.mc")
    if how == "env":
        monkeypatch.setenv("MC_DEBUG", "1")
    r = run_mc(["chat", missing, "--once", "hi", *TINY] + (["--debug"] if how == "flag" else []))
    assert r.code == mcstore.TreeNotFound.exit_code
    assert "Traceback (most recent call last)" in r.err and "TreeNotFound" in r.err
    assert r.err_lines[-1].startswith(f"mc: {missing}: no MegaContext tree")


def test_errors_as_real_processes(tmp_path, tree):
    """The exit codes and the single line as a shell sees them (these fail before torch loads)."""
    missing = tmp_path / "nope.mc"
    p = run_proc(["chat", missing, "--once", "hi", *TINY])
    assert p.returncode == 3 and not missing.exists()
    one_error_line(p.stderr, str(missing), "no MegaContext tree")
    p = run_proc(["ingest", "foo://b/x.mc", "-", *TINY], input="text")
    assert p.returncode == 2
    one_error_line(p.stderr, "unknown storage scheme")
    before = state(tree)
    p = run_proc(["ingest", tree, "-", *TINY], input="")
    assert p.returncode == 11 and p.stdout == ""
    one_error_line(p.stderr, "stdin is empty")
    p = run_proc(["ingest", tree, "-", *TINY], input=b"\xc3\x28 bad")
    assert p.returncode == 11
    one_error_line(p.stderr, "stdin is not valid UTF-8 (byte 0)")
    p = run_proc(["chat", missing, "--once", "hi", "--debug", *TINY])
    assert p.returncode == 3 and "Traceback" in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("mc: ")
    assert state(tree) == before


def test_chat_with_invalid_utf8_on_stdin_is_one_line(tmp_path):
    url = str(tmp_path / "u.mc")
    (tmp_path / "a.txt").write_text("some text to remember " * 20)
    assert run_mc(["ingest", url, tmp_path / "a.txt", *TINY]).code == 0
    fails(["chat", url, *TINY], 11, "not valid UTF-8", tree=url, input=b"hello \xff\xfe there\n")
