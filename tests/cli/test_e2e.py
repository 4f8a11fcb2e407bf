"""ingest → chat --once → info / log / show --png, in-process and as real processes; memory
persists across invocations; interactive chat driven through stdin."""

from __future__ import annotations

import subprocess
import threading
import time

import mcstore
from tests.cli.helpers import (
    ROOT,
    TINY,
    decode,
    mc_cmd,
    mc_env,
    run_mc,
    run_proc,
    state,
    tree_tokens,
    verify_ok,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _sources(url):
    return [s.source for s in mcstore.open(url).segments()]


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR" and len(data) > 5000, len(data)
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert w > 500 and h > 100, (w, h)
    assert data.rstrip(b"\0")[-8:-4] == b"IEND"


def test_ingest_chat_info_log_show_in_process(docs, tmp_path, monkeypatch):
    url = str(tmp_path / "notes.mc")
    monkeypatch.chdir(docs.parent)
    r = run_mc(["ingest", url, "docs", "-", *TINY], input="Notes from stdin: buy more lamp oil.\n")
    assert r.code == 0, r.err
    assert r.out.startswith(f"created {url} for tiny-llama-s0")
    assert "ingested 6 file(s)" in r.out and "1 skipped" in r.out
    assert r.err_lines == [
        "mc: warning: docs/image.png looks binary (it contains NUL bytes); skipped"
    ]
    # every file is one segment named by its path (a folder's files sorted, then its folders;
    # hidden folders are not walked), stdin last as it was named last
    assert _sources(url) == [
        "docs/a.txt", "docs/b.md", "docs/sub/c.txt", "docs/sub/skip.log", "docs/sub/deep/d.md",
        "stdin",
    ]  # fmt: skip
    assert "The harbour code is 4711." in decode(tree_tokens(url))
    v_ingest = mcstore.open(url).version

    r = run_mc(["chat", url, "--once", "What is the harbour code?", "--show-focus",
                "--max-new-tokens", "12", *TINY])  # fmt: skip
    assert r.code == 0, r.err
    assert r.err.startswith("recall: ")  # --show-focus lists recall and detailed spans (stderr)
    assert "\nfocus: " in r.err and "first token after" in r.err
    t = mcstore.open(url)
    assert t.version == v_ingest + 1  # the question and the answer: one commit
    segs = t.segments()
    assert [s.source for s in segs[-2:]] == ["chat:user", "chat:assistant"]
    asked = decode(t.tokens(segs[-2].start, segs[-2].stop))
    assert asked == "User: What is the harbour code?\n"
    answered = decode(t.tokens(segs[-1].start, segs[-1].stop))
    assert answered == f"Assistant: {r.out.strip()}\n\n"

    # memory persists: a second invocation sees the first turn in log and segments
    r2 = run_mc(["chat", url, "--once", "And the ferry?", "--max-new-tokens", "8", *TINY])
    assert r2.code == 0, r2.err
    assert _sources(url)[-4:] == ["chat:user", "chat:assistant"] * 2

    # --no-remember answers from memory and leaves the tree as it was
    before = mcstore.open(url).version
    r3 = run_mc(["chat", url, "--once", "And the ferry?", "--no-remember", "--max-new-tokens", "4",
                 *TINY])  # fmt: skip
    assert r3.code == 0, r3.err
    assert mcstore.open(url).version == before
    log = run_mc(["log", url])
    assert log.code == 0
    messages = [line.split(" tokens", 1)[1].strip() for line in log.out.splitlines()]
    assert messages[:2] == ["chat: user + assistant"] * 2  # a question and its answer: one commit
    assert "ingest docs/a.txt" in messages and messages[-1] == "create"

    info = run_mc(["info", url])
    assert info.code == 0, info.err
    v, n, segs = state(url)
    for s in (f"version   {v}", f"length    {n} tokens", "tokenizer tiny-llama-s0", "segments  10"):
        assert s in info.out, (s, info.out)

    png = tmp_path / "timeline.png"
    r = run_mc(["show", url, "--png", png, *TINY])
    assert r.code == 0, r.err
    assert f"{url}: {n} tokens, version {v}" in r.out
    assert "docs/sub/deep/d.md" in r.out and "chat:assistant" in r.out
    assert f"wrote {png}" in r.out
    _check_png(png)
    r = run_mc(["show", url, "--query", "harbour code", *TINY])
    assert r.code == 0, r.err and "focus:" in r.out
    assert state(url)[0] == v  # show never writes
    verify_ok(url)
    # interactively, a /private line is answered and not remembered; the next line is
    r4 = run_mc(["chat", url, "--max-new-tokens", "3", *TINY],
                input="/private What is the harbour code?\nAnd the ferry?\n")  # fmt: skip
    assert r4.code == 0, r4.err
    t = mcstore.open(url)
    assert t.version == v + 1
    asked = t.segments()[-2]
    assert decode(t.tokens(asked.start, asked.stop)) == "User: And the ferry?\n"


class InteractiveChat:
    """`mc chat TREE` as a process driven through stdin; output is collected as it arrives."""

    def __init__(self, tree):
        self.p = subprocess.Popen(
            mc_cmd("chat", tree, "--show-focus", "--max-new-tokens", "10", *TINY),
            cwd=ROOT,
            env=mc_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out, self.err = bytearray(), bytearray()
        self.threads = [
            threading.Thread(target=self._pump, args=a, daemon=True)
            for a in ((self.p.stdout, self.out), (self.p.stderr, self.err))
        ]
        for th in self.threads:
            th.start()

    @staticmethod
    def _pump(src, dst):
        for chunk in iter(lambda: src.read1(4096), b""):
            dst += chunk

    def send(self, line: bytes) -> None:
        self.p.stdin.write(line)
        self.p.stdin.flush()

    def wait_for(self, needle: bytes, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.err.count(needle) < count:
            assert self.p.poll() is None, (bytes(self.out), bytes(self.err))
            assert time.monotonic() < deadline, (bytes(self.out), bytes(self.err))
            time.sleep(0.05)

    def close(self, timeout: float = 120) -> int:
        self.p.stdin.close()
        try:
            return self.p.wait(timeout=timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
            for th in self.threads:
                th.join(timeout=10)


def test_as_processes(docs, tmp_path, tree):
    """The same path through real processes (exit codes, stdout/stderr, files), and `mc chat`
    interactive: two questions on stdin, then EOF. Each answer is on stdout before the next
    question is sent (streamed, not buffered to the end) and both turns are remembered. The
    interactive process starts first so that its start-up overlaps the ingest."""
    v0, _, segs0 = state(tree)
    chat = InteractiveChat(tree)
    try:
        url = tmp_path / "p.mc"
        p = run_proc(["ingest", url, docs, "--exclude", "*.log", *TINY])
        assert p.returncode == 0, p.stderr
        assert "ingested 4 file(s)" in p.stdout
        # stderr is a pipe: no progress bar, only the warning about the binary file
        assert p.stderr.splitlines() == [
            f"mc: warning: {docs}/image.png looks binary (it contains NUL bytes); skipped"
        ]
        p = run_proc(["chat", url, "--once", "Who keeps the lighthouse?", "--show-focus",
                      "--max-new-tokens", "8", *TINY])  # fmt: skip
        assert p.returncode == 0, p.stderr
        assert "focus:" in p.stderr and "Traceback" not in p.stderr
        assert _sources(str(url))[-2:] == ["chat:user", "chat:assistant"]
        png = tmp_path / "p.png"
        p = run_proc(["show", url, "--png", png, *TINY])
        assert p.returncode == 0, p.stderr
        _check_png(png)
        p = run_proc(["info", url])
        assert p.returncode == 0 and "segments  6" in p.stdout, p.stdout + p.stderr
        verify_ok(str(url))

        chat.send(b"Where are the spare keys?\n")
        chat.wait_for(b"focus:", 1)  # the first answer is complete (its focus report follows)
        first = bytes(chat.out)
        assert first.endswith(b"\n")
        chat.send(b"\nWhat is the harbour code?\n")  # a blank line is ignored
        assert chat.close() == 0, bytes(chat.err)
    finally:
        if chat.p.poll() is None:
            chat.p.kill()
    out, err = bytes(chat.out), bytes(chat.err)
    assert b"Traceback" not in err and b"you> " not in out  # no prompt when stdin is a pipe
    assert err.count(b"focus:") == 2
    v, _, segs = state(tree)
    assert v == v0 + 2  # two turns, each question with its answer in one commit
    new = segs[len(segs0) :]
    assert [s[2] for s in new] == ["chat:user", "chat:assistant"] * 2
    t = mcstore.open(tree)
    turns = [decode(t.tokens(s[0], s[1])) for s in new]
    assert turns[0] == "User: Where are the spare keys?\n"
    assert turns[2] == "User: What is the harbour code?\n"
    second = out[len(first) :].decode()
    assert turns[1] == f"Assistant: {first.decode().strip()}\n\n"
    assert turns[3] == f"Assistant: {second.strip()}\n\n"
    verify_ok(tree)


def test_regist_with_another_gistnet_then_keep_using_it(docs, tmp_path, monkeypatch):
    """After `mc regist --gistnet CK`, ingest and chat work with `--gistnet CK`; without it they
    say how to proceed (one line, non-zero) and leave the tree as it is."""
    import torch

    import mcmodels

    url = str(tmp_path / "notes.mc")
    monkeypatch.chdir(docs.parent)
    assert run_mc(["ingest", url, "docs/a.txt", *TINY]).code == 0
    torch.manual_seed(1)
    ck = tmp_path / "other"
    mcmodels.save_checkpoint(
        mcmodels.GistNet.for_base(mcmodels.tiny_base(0)), ck, base=mcmodels.tiny_base(0)
    )
    r = run_mc(["regist", url, "--gistnet", ck, *TINY])
    assert r.code == 0, r.err
    before = state(url)
    r = run_mc(["chat", url, "--once", "What is the harbour code?", *TINY])
    assert r.code != 0 and "--gistnet" in r.err and len(r.err.strip().splitlines()) == 1
    assert state(url) == before
    r = run_mc(
        ["chat", url, "--once", "Anything?", "--max-new-tokens", "4", "--gistnet", ck, *TINY]
    )
    assert r.code == 0, r.err
    r = run_mc(["ingest", url, "docs/b.md", "--gistnet", ck, *TINY])
    assert r.code == 0, r.err
    assert _sources(url)[-1] == "docs/b.md"
    verify_ok(url)
