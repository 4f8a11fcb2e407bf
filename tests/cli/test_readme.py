"""The README's two commands, checked against the repository as it is (so the README cannot
rot) without reinstalling on every run; the demo itself runs, on the real default model, in
the slow test."""

from __future__ import annotations

import os
import re
import shlex
import tomllib

import pytest

from tests.cli.helpers import ROOT, mc_env, one_error_line, run_mc, run_proc, state


def readme_commands() -> list[list[list[str]]]:
    """The set-up block's commands: one list per line, of `&&`-joined argument lists."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"## Set up\n(.*?)```bash\n(.*?)```", text, re.S)
    assert m, "README.md has no '## Set up' section with a ```bash block"
    lines = [ln.split(" #")[0].strip() for ln in m.group(2).splitlines()]
    return [[shlex.split(part) for part in ln.split("&&")] for ln in lines if ln]


def test_readme_commands_match_the_repository():
    (install, demo), (install_dev, tests) = readme_commands()
    assert install == ["./install"] and install_dev == ["./install", "--dev"]
    script = ROOT / "install"
    assert script.is_file() and os.access(script, os.X_OK)
    assert "--dev)" in script.read_text()  # the flag the README passes exists
    # `.venv/bin/mc` is the console script that `pip install -e .` makes from pyproject
    assert demo == [".venv/bin/mc", "demo"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["mc"] == "cli.main:main"
    from cli.main import main

    assert callable(main)
    # the test command: .ci/run runs exactly it, and --dev installs what it needs
    assert tests == [".venv/bin/python", "-m", "pytest", "-q"]
    ci = (ROOT / ".ci" / "run").read_text()
    readme_line = " && ".join(shlex.join(p) for p in (install_dev, tests))
    assert readme_line in ci.splitlines(), ci
    assert any(d.startswith("pytest") for d in project["project"]["optional-dependencies"]["dev"])


def test_mc_demo_help():
    p = run_proc(["demo", "--help"])
    assert p.returncode == 0 and "Usage: mc demo" in p.stdout and "--tree" in p.stdout, p.stderr
    venv_mc = ROOT / ".venv" / "bin" / "mc"
    if venv_mc.exists():  # an installed checkout: the README's own entry point
        import subprocess

        q = subprocess.run([venv_mc, "demo", "--help"], capture_output=True, text=True, timeout=60)
        assert q.returncode == 0 and "Usage: mc demo" in q.stdout, q.stderr


def test_demo_never_replaces_what_is_not_a_tree(tmp_path):
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    r = run_mc(["demo", "--tree", folder])
    assert r.code == 4
    one_error_line(r.err, str(folder), "not a MegaContext tree", "--tree")
    assert (folder / "thesis.txt").read_text() == "years of work"


def test_demo_never_replaces_a_tree_with_other_memory(tmp_path):
    import numpy as np

    import mcstore

    url = str(tmp_path / "notes.mc")
    t = mcstore.create(url, dim=8)
    t.append(np.arange(100, dtype=np.int32), gister=lambda lv, kids: np.zeros((len(kids), 8)),
             source="notes.md")  # fmt: skip
    before = state(url)
    r = run_mc(["demo", "--tree", url])
    assert r.code == 4
    one_error_line(r.err, url, "more than the demo", "notes.md", "--tree")
    assert state(url) == before


@pytest.mark.slow
def test_mc_demo_remembers(tmp_path):
    """`mc demo` as the README runs it (default model, default tree in the current folder)."""
    p = run_proc(["demo"], cwd=tmp_path, env=mc_env(), timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and p.stderr.strip() == "", p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert "remembered" in last and "NOT remembered" not in last, p.stdout
    assert "focus: spans read in full detail:" in p.stdout
    assert (tmp_path / "demo.mc" / "zarr.json").exists()
