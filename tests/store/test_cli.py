"""`mc info/log/tag/fork/gc/verify`: CliRunner and real subprocesses; errors are one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cli.store_cmds
import mcstore
from cli.main import cli, main
from mcstore import format as F
from tests.store.helpers import DIM, gister

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path):
    url = str(tmp_path / "notes.mc")
    b = {
        "tokenizer": {"name": "bytes", "hash": "abc"},
        "gistnet": {"id": "g0", "hash": "h0", "dim": DIM},
    }
    t = mcstore.create(url, dim=DIM, block=4, epoch=64, binding=b)
    t.append(np.arange(300) % 97, gister=gister, source="a.txt", message="ingest a")
    t.append(np.arange(50), gister=gister, source="chat:user", message="turn")
    return url


def run_main(args):
    """The real entry point (with its error handling) under CliRunner's capture."""
    runner = CliRunner()
    with runner.isolation() as outs:
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = outs[0].getvalue().decode(), outs[1].getvalue().decode()
    return code, out, err


def test_info_log_tag_fork_gc(tree, tmp_path):
    r = CliRunner().invoke(cli, ["info", tree])
    assert r.exit_code == 0, r.output
    for s in (
        "format    1",
        "length    350 tokens",
        "L1: 87",
        "L2: 21",
        "L3: 5",
        "d=8 float16",
        "tokenizer bytes (abc)",
        "gistnet g0",
        "segments  2",
        "version   3",
        "storage",
        "bytes",
    ):
        assert s in r.output, (s, r.output)
    r = CliRunner().invoke(cli, ["log", tree])
    assert r.exit_code == 0 and "ingest a" in r.output and "turn" in r.output
    assert r.output.splitlines()[0].split()[0] == "3"
    r = CliRunner().invoke(cli, ["tag", tree, "v1", "--version", "2"])
    assert r.exit_code == 0 and "tagged version 2" in r.output
    assert "v1=2" in CliRunner().invoke(cli, ["info", tree]).output
    r = CliRunner().invoke(cli, ["info", tree, "--version", "v1"])
    assert "length    300 tokens" in r.output
    dst = str(tmp_path / "fork.mc")
    r = CliRunner().invoke(cli, ["fork", tree, dst, "--version", "v1"])
    assert r.exit_code == 0, r.output
    assert mcstore.open(dst).length == 300
    r = CliRunner().invoke(cli, ["gc", tree, "--grace", "0", "--no-live-writers"])
    assert r.exit_code == 0 and "removed 0 objects" in r.output
    r = CliRunner().invoke(cli, ["verify", dst])
    assert r.exit_code == 0 and "ok:" in r.output
    r = CliRunner().invoke(cli, ["info", tree, "--json"])
    assert '"length": 350' in r.output


def _one_line_error(code, err, *needles):
    assert code != 0
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_error_lines(tree, tmp_path):
    missing = str(tmp_path / "nope.mc")
    code, _, err = run_main(["info", missing])
    _one_line_error(code, err, missing, "no MegaContext tree")
    assert code == mcstore.TreeNotFound.exit_code
    code, _, err = run_main(["info", tree, "--version", "99"])
    _one_line_error(code, err, "no version 99")
    code, _, err = run_main(["info", tree, "--version", "nosuchtag"])
    _one_line_error(code, err, "no tag 'nosuchtag'")
    code, _, err = run_main(["tag", tree, "x", "--version", "42"])
    _one_line_error(code, err, "no version 42")
    run_main(["tag", tree, "keep", "--version", "2"])
    code, _, err = run_main(["tag", tree, "keep", "--version", "3"])
    _one_line_error(code, err, "already names version 2")
    dst = str(tmp_path / "f.mc")
    assert run_main(["fork", tree, dst])[0] == 0
    code, _, err = run_main(["fork", tree, dst])
    _one_line_error(code, err, dst, "already exists")
    assert code == mcstore.TreeExists.exit_code
    code, _, err = run_main(["info", tree, "--storage-option", "novalue"])
    assert code != 0 and "key=value" in err
    # corrupt commit record
    with open(os.path.join(tree, F.log_key(3)), "r+b") as f:
        f.seek(20)
        f.write(b"#")
    code, _, err = run_main(["info", tree])
    _one_line_error(code, err, tree, F.log_key(3), "restore")
    assert code == mcstore.CorruptTree.exit_code


def test_conflict_error_line(tree):
    w1 = mcstore.open(tree, "a")
    w2 = mcstore.open(tree, "a")
    w1.append([1, 2, 3], gister=gister, source="x")
    with pytest.raises(mcstore.CommitConflict) as ei:
        w2.append([4], gister=gister, source="y")
    msg = str(ei.value)
    assert tree in msg and "refresh" in msg and "\n" not in msg


def test_real_subprocess(tree, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, "-m", "cli", "info", tree],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and "length    350 tokens" in p.stdout, p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "cli", "log", str(tmp_path / "missing")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == mcstore.TreeNotFound.exit_code
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("mc: ")


def test_storage_options_on_s3(moto_server):
    so = moto_server["storage_options"]
    url = "s3://mc-test/cli/notes.mc"
    t = mcstore.create(url, dim=DIM, block=4, epoch=64, storage_options=so)
    t.append(np.arange(100), gister=gister, source="s3")
    opts = ["-o", f"endpoint_url={so['endpoint_url']}", "-o", "key=testing", "-o", "secret=testing"]
    r = CliRunner().invoke(cli, ["info", url, *opts])
    assert r.exit_code == 0 and "length    100 tokens" in r.output, r.output
    r = CliRunner().invoke(cli, ["tag", url, "s", *opts])
    assert r.exit_code == 0, r.output
    code, _, err = run_main(["info", "s3://mc-test/cli/none.mc", *opts])
    _one_line_error(code, err, "no MegaContext tree")
    bad = [
        "-o",
        "endpoint_url=http://127.0.0.1:1",
        "-o",
        "key=x",
        "-o",
        "secret=y",
        "-o",
        'config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 1}',
    ]
    code, _, err = run_main(["info", url, *bad])
    _one_line_error(code, err, "cannot reach the storage")
    assert code == mcstore.StoreAccessError.exit_code
