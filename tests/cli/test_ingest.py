"""`mc ingest`: folders and globs, stdin, binary files, the progress bar, and resumability:
an interrupted ingest (Ctrl-C in-process, SIGINT and SIGKILL of a real process) leaves the
last commit intact and a re-run completes it without duplicating a file or a chunk."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import mcruntime.session
import mcstore
from mcmodels.tokenizer import ByteTokenizer
from mcruntime.ingest import missing_ranges, walk
from mcruntime.render import render_document
from tests.cli.helpers import (
    ROOT,
    TINY,
    ctrl_c_default,
    mc_cmd,
    mc_env,
    multi_chunk_docs,
    one_error_line,
    run_mc,
    state,
    tree_tokens,
    verify_ok,
)


def sources(url):
    return [s.source for s in mcstore.open(url).segments()]


def expected_tokens(files: list[Path]) -> np.ndarray:
    """What a complete ingest of ``files`` (in this order) puts in the tree, token for token."""
    tok = ByteTokenizer()
    ids = [tok.encode(render_document(f.read_text(), str(f))) for f in files]
    return np.concatenate([np.asarray(x, dtype=np.int32) for x in ids])


def test_include_exclude(docs, tmp_path):
    url = str(tmp_path / "g.mc")
    r = run_mc(["ingest", url, docs, "--include", "*.md", *TINY])
    assert r.code == 0, r.err
    assert sources(url) == [f"{docs}/b.md", f"{docs}/sub/deep/d.md"]
    assert r.err == ""  # the binary file was filtered out by --include before it was read
    url = str(tmp_path / "h.mc")
    r = run_mc(["ingest", url, docs, "--include", "*.txt", "--include", "*.log",
                "--exclude", "sub/*.log", *TINY])  # fmt: skip
    assert r.code == 0, r.err
    assert sources(url) == [f"{docs}/a.txt", f"{docs}/sub/c.txt"]
    # a file named directly is taken even when --include would not match it
    r = run_mc(["ingest", url, docs / "b.md", "--include", "*.txt", *TINY])
    assert r.code == 0 and sources(url)[-1] == f"{docs}/b.md"


def test_walk_order_and_hidden(docs):
    got = [p.relative_to(docs).as_posix() for p in walk([str(docs)])]
    assert got == ["a.txt", "b.md", "image.png", "sub/c.txt", "sub/skip.log", "sub/deep/d.md"]


def test_stdin_with_source_name(tree):
    r = run_mc(["ingest", tree, "-", "--source", "clipboard.txt", *TINY], input="pasted text\n")
    assert r.code == 0, r.err
    assert sources(tree)[-1] == "clipboard.txt"
    r = run_mc(["ingest", tree, "-", "--source", "clipboard.txt", *TINY], input="pasted text\n")
    assert r.code == 0 and "0 commit(s)" in r.out and "1 already present" in r.out


def test_progress_bar_when_asked_even_without_a_terminal(tmp_path):
    files = multi_chunk_docs(tmp_path / "many", files=2, chars=1500)
    url = str(tmp_path / "p.mc")
    r = run_mc(["ingest", url, files, "--progress", "--chunk-tokens", "256", *TINY])
    assert r.code == 0, r.err
    assert "ingest:" in r.err and "100%" in r.err and "tok/s" in r.err and "Traceback" not in r.err
    assert r.out.count("\n") == 2  # created …, ingested …: the bar never touches stdout
    r = run_mc(["ingest", url, files, *TINY])  # CliRunner's stderr is no terminal: no bar
    assert r.code == 0 and r.err == ""


def test_rerun_adds_nothing(tree, docs):
    before = state(tree)
    r = run_mc(["ingest", tree, docs, *TINY])  # the same content, named by another path
    assert r.code == 0, r.err
    assert "ingested 0 file(s), 0 tokens in 0 commit(s)" in r.out
    assert "5 already present, 1 skipped" in r.out
    assert state(tree) == before


def test_same_text_twice_in_one_run_is_stored_once_and_changed_text_again(tmp_path):
    d = tmp_path / "dup"
    d.mkdir()
    (d / "one.txt").write_text("the same words\n")
    (d / "two.txt").write_text("the same words\n")
    url = str(tmp_path / "d.mc")
    r = run_mc(["ingest", url, d, *TINY])
    assert r.code == 0 and "ingested 1 file(s)" in r.out and "1 already present" in r.out
    assert sources(url) == [f"{d}/one.txt"]
    (d / "two.txt").write_text("other words now\n")
    r = run_mc(["ingest", url, d, *TINY])
    assert r.code == 0 and "ingested 1 file(s)" in r.out
    assert sources(url) == [f"{d}/one.txt", f"{d}/two.txt"]


def test_ctrl_c_in_process_then_resume_with_another_chunk_size(tmp_path, monkeypatch):
    files_dir = multi_chunk_docs(tmp_path / "many", files=3, chars=2000)
    files = list(walk([str(files_dir)]))
    url = str(tmp_path / "r.mc")
    original = mcruntime.session.Session.append_ids
    calls = []

    def append_then_ctrl_c(self, ids, **kw):
        calls.append(len(ids))
        if len(calls) == 7:
            raise KeyboardInterrupt  # as if Ctrl-C arrived while committing chunk 7
        return original(self, ids, **kw)

    monkeypatch.setattr(mcruntime.session.Session, "append_ids", append_then_ctrl_c)
    r = run_mc(["ingest", url, files_dir, "--chunk-tokens", "256", *TINY])
    assert r.code == 130
    line = one_error_line(r.err, "interrupted after 0 of 3 input(s) and 6 commit(s)",
                          url, "at its last commit", "run the same command again")  # fmt: skip
    assert line.startswith("mc: interrupted")
    v, n, _ = state(url)
    assert v == 1 + 6 and n == 6 * 256  # create + 6 chunks of the first file
    verify_ok(url)
    monkeypatch.setattr(mcruntime.session.Session, "append_ids", original)
    r = run_mc(["ingest", url, files_dir, "--chunk-tokens", "1000", *TINY])
    assert r.code == 0, r.err
    assert "ingested 3 file(s)" in r.out
    assert np.array_equal(tree_tokens(url), expected_tokens(files))
    # a file longer than a chunk: each part is a segment whose name says which tokens it holds
    assert [x.split(" (tokens ")[0] for x in sources(url)[:6]] == [str(files[0])] * 6
    assert sources(url)[0].endswith(f" (tokens 0-256 of {len(expected_tokens(files[:1]))})")
    r = run_mc(["ingest", url, files_dir, *TINY])
    assert r.code == 0 and "0 commit(s)" in r.out and "3 already present" in r.out


def _signal_masks(pid: int) -> str:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "unknown"
    return " ".join(
        ln.replace("\t", "") for ln in lines if ln.startswith(("SigBlk", "SigIgn", "SigCgt"))
    )


def test_sigint_and_sigkill_mid_ingest_then_resume(tmp_path):
    """Two real `mc ingest` processes (run side by side to share the start-up time) are
    interrupted, one by SIGINT (Ctrl-C) and one by SIGKILL, after a few commits of a multi-file,
    multi-chunk ingest; each tree verifies at its last commit, and a re-run completes it
    without duplicating a file or a chunk."""
    # ~570 commits: long enough that the signal lands mid-ingest even when this process is
    # starved of CPU for a few seconds (CI once saw the whole ~190-commit ingest finish first)
    files_dir = multi_chunk_docs(tmp_path / "many", files=6, chars=6000)
    files = list(walk([str(files_dir)]))
    want = expected_tokens(files)
    procs = {}
    T0 = time.monotonic()
    for sig in (signal.SIGINT, signal.SIGKILL):
        url = tmp_path / f"{sig.name}.mc"
        procs[sig] = (
            url,
            subprocess.Popen(
                mc_cmd("ingest", url, files_dir, "--chunk-tokens", "64", *TINY),
                cwd=ROOT,
                env=mc_env(),
                preexec_fn=ctrl_c_default,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    outs, masks = {}, {}
    try:
        deadline = time.monotonic() + 180
        waiting = dict(procs)
        while waiting:
            for sig, (url, p) in list(waiting.items()):
                if len(list((url / "log").glob("*.json"))) >= 6:  # create + 5 chunks
                    masks[sig] = _signal_masks(p.pid)  # said if the signal is not acted on
                    p.send_signal(sig)
                    del waiting[sig]
                else:
                    assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        print("signalled", time.monotonic() - T0)
        for sig, (_, p) in procs.items():
            outs[sig] = p.communicate(timeout=60)
        print("exited", time.monotonic() - T0)
    finally:
        for _, p in procs.values():
            if p.poll() is None:
                p.kill()
    for sig, (url, p) in procs.items():
        out, err = outs[sig]
        v, n, _ = state(str(url))
        assert v >= 6 and n < len(want), (
            f"{sig.name} did not interrupt the ingest (rc {p.returncode}; the child's signal "
            f"masks when signalled: {masks.get(sig)}; stderr: {err[-300:]})"
        )
        assert np.array_equal(tree_tokens(str(url)), want[:n])  # a prefix of the whole, intact
        verify_ok(str(url))
        if sig == signal.SIGINT:
            assert p.returncode == 130, err
            one_error_line(err, "interrupted after", "at its last commit", "run the same command")
            assert "ingested" not in out
        else:
            assert p.returncode == -signal.SIGKILL
        print("rerun", time.monotonic() - T0)
        r = run_mc(["ingest", url, files_dir, *TINY])  # the rest, in chunks of the default size
        assert r.code == 0, r.err
        assert np.array_equal(tree_tokens(str(url)), want)  # completed, nothing duplicated
        tags = [s[3] for s in state(str(url))[2]]
        assert len(tags) == len(set(tags))  # every (file, token range) committed exactly once
        verify_ok(str(url))
        r = run_mc(["ingest", url, files_dir, *TINY])
        assert r.code == 0 and "0 commit(s)" in r.out and f"{len(files)} already present" in r.out


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 500),
    cuts=st.lists(st.tuples(st.integers(0, 520), st.integers(0, 60)), max_size=6),
    chunk=st.integers(1, 100),
)
def test_missing_ranges_cover_exactly_the_gaps(n, cuts, chunk):
    have = [(a, a + w) for a, w in cuts]
    todo = missing_ranges(n, have, chunk)
    covered = np.zeros(n, dtype=int)
    for a, b in have:
        covered[max(a, 0) : min(b, n)] = 1
    for a, b in todo:
        assert 0 <= a < b <= n and b - a <= chunk
        assert not covered[a:b].any()  # never re-appends what is there
        covered[a:b] += 1
    assert (covered == 1).all()  # and leaves nothing out
    assert todo == sorted(todo)
