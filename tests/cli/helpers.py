"""Helpers of the end-to-end tests of `mc`: the real entry point in-process and as a process.

Everything runs on the tiny model (``--model tiny``: a random Llama with a byte tokenizer), so
a command takes well under a second in-process; a subprocess pays ~5 s of imports, so the
suite uses them where only a real process can tell (signals, pipes, the environment).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

import mcstore
from cli.main import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ("--model", "tiny")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [x for x in self.err.splitlines() if x.strip()]


def run_mc(args, input: bytes | str | None = None) -> Result:
    """`mc ARGS` through the real entry point (its error handling included), in-process."""
    runner = CliRunner()
    if isinstance(input, str):
        input = input.encode()
    with runner.isolation(input=input) as outs:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = outs[0].getvalue().decode(), outs[1].getvalue().decode()
    return Result(code, out, err)


def mc_env(**extra: str | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MC_DEBUG", None)
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def mc_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "cli", *map(str, args)]


def run_proc(args, *, input: bytes | str | None = None, env=None, timeout=180, cwd=ROOT):
    """`mc ARGS` as a real process (this worktree's code). Returns a CompletedProcess whose
    stdout and stderr are text; ``input`` goes to stdin byte for byte."""
    if isinstance(input, str):
        input = input.encode()
    p = subprocess.run(
        mc_cmd(*args), cwd=cwd, env=env or mc_env(), input=input, capture_output=True,
        timeout=timeout,
    )  # fmt: skip
    p.stdout = p.stdout.decode(errors="replace")
    p.stderr = p.stderr.decode(errors="replace")
    return p


def one_error_line(err: str, *needles: str) -> str:
    """stderr holds exactly one line besides progress output: ``mc: …``, with no traceback."""
    assert "Traceback" not in err, err
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.strip()]
    lines = [x for x in lines if not x.startswith("ingest:")]  # tqdm's bar, when forced on
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("mc: "), line
    for n in needles:
        assert n in line, (n, line)
    return line


def state(url: str, storage_options: dict | None = None) -> tuple[int, int, list]:
    """(version, length, segments) of a tree: what "the tree stays at its last commit" means."""
    t = mcstore.open(url, storage_options=storage_options)
    return t.version, t.length, [(s.start, s.stop, s.source, s.tags) for s in t.segments()]


def verify_ok(url: str, storage_options: dict | None = None) -> None:
    mcstore.verify(url, storage_options=storage_options)


def tree_tokens(url: str, storage_options: dict | None = None):
    t = mcstore.open(url, storage_options=storage_options)
    return t.tokens(0, t.length) if t.length else []


def decode(ids) -> str:
    from mcmodels.tokenizer import ByteTokenizer

    return ByteTokenizer().decode([int(i) for i in ids])


def sigint(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGINT)


def ctrl_c_default() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT: a suite started as a
    background job (``pytest … &`` in a script) has SIGINT ignored, the child would inherit
    that and Python would then never raise KeyboardInterrupt in it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# ---- corpora ---------------------------------------------------------------------------------


def write_docs(root: Path) -> Path:
    """A small folder: text in two levels, a binary file, files the globs filter."""
    (root / "sub" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "a.txt").write_text("Alpha notes. The harbour code is 4711.\n")
    (root / "b.md").write_text("# Beta\nThe ferry leaves at dawn.\n")
    (root / "sub" / "c.txt").write_text("Gamma: the lighthouse keeper is named Ines.\n")
    (root / "sub" / "deep" / "d.md").write_text("Delta: spare keys are in the red box.\n")
    (root / "sub" / "skip.log").write_text("a log line we exclude\n")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))
    (root / ".hidden" / "secret.txt").write_text("hidden folders are not walked\n")
    return root


def multi_chunk_docs(root: Path, files: int = 6, chars: int = 2000) -> Path:
    """Several files of ~``chars`` bytes each: several chunks each at --chunk-tokens 256."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        lines = [f"File {i}, line {k}: the value of item {i}-{k} is {(i * 7919 + k * 31) % 1000}."
                 for k in range(chars // 50)]  # fmt: skip
        (root / f"doc{i:02d}.txt").write_text("\n".join(lines) + "\n")
    return root
