"""NaN and infinity in every float argument (issue 22, item 2).

``nan < 900`` is false, so a NaN grace once passed gc's floor and then made every unreachable
object look old: a live writer's fresh shard was deleted. The library checks every float it is
given with ``math.isfinite``; every float flag of ``mc`` refuses nan/inf with one line and exit
code 11 (bad input).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mcstore
from cli.main import main
from tests.store.helpers import DIM, gister

BAD = ["nan", "NaN", "inf", "-inf", "1e999"]


@pytest.fixture
def tree(tmp_path) -> str:
    url = str(tmp_path / "n.mc")
    t = mcstore.create(url, dim=DIM, block=4, epoch=64)
    t.append(np.arange(100), gister=gister, source="a")
    # a live writer's shard, written a moment ago and not yet committed
    t.backend.write("arrays/tokens/c/5", b"fresh" * 10)
    return url


def run_main(args) -> tuple[int, str]:
    runner = CliRunner()
    with runner.isolation() as outs:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        err = outs[1].getvalue().decode()
    return code, err


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("arg", ["grace", "keep_since"])
def test_gc_refuses_non_finite_numbers(tree, arg, value):
    kw = {"grace": 3600.0, arg: value}
    for live in (False, True):
        with pytest.raises(mcstore.InvalidArgument, match=arg):
            mcstore.gc(tree, no_live_writers=live, **kw)
    assert (Path(tree) / "arrays/tokens/c/5").exists()


def test_gc_refuses_a_keep_last_that_is_not_a_whole_number(tree):
    for bad in (0, 1.5, math.nan, True):
        with pytest.raises(mcstore.InvalidArgument, match="keep_last"):
            mcstore.gc(tree, keep_last=bad)


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("flag", ["--grace", "--keep-since"])
def test_mc_gc_refuses_non_finite_flags(tree, flag, value):
    code, err = run_main(["gc", tree, flag, value])
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 11, (code, err)
    assert len(lines) == 1 and flag in lines[0] and "finite" in lines[0], err
    assert (Path(tree) / "arrays/tokens/c/5").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["corpus", "build", "--out", "x", "--max-docs", "1", "--max-mb", "nan"],
        # an unknown model: were the flag accepted, the command would stop there (exit 21)
        ["train", "gistnet", "--model", "no-such", "--out", "x", "--lr", "nan"],
        ["train", "gistnet", "--model", "no-such", "--out", "x", "--p-expand", "inf"],
        ["train", "gistnet", "--model", "no-such", "--out", "x", "--clip", "-inf"],
        ["train", "gistnet", "--model", "no-such", "--out", "x", "--ce-weight", "nan"],
        ["train", "lensnet", "--model", "no-such", "--out", "x", "--lr", "inf"],
    ],
    ids=lambda a: " ".join(a[:2] + a[-2:-1]),
)
def test_every_float_flag_refuses_non_finite_numbers(args, tmp_path):
    args = [str(tmp_path / "out") if a == "x" else a for a in args]
    code, err = run_main(args)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 11, (code, err)
    assert len(lines) == 1 and args[-2] in lines[0] and "finite" in lines[0], err
    assert list(tmp_path.iterdir()) == []  # refused while parsing: nothing ran


def test_every_float_option_of_mc_is_checked():
    """No click option of `mc` takes a plain float: each uses a type that refuses nan/inf."""
    import click

    # each command module adds its commands to `mc`
    import cli.model_cmds
    import cli.run_cmds
    import cli.serve_cmd
    import cli.show
    import cli.store_cmds
    from cli.main import cli

    plain = []

    def walk(cmd, path):
        for p in cmd.params:
            if isinstance(p.type, click.types.FloatParamType):
                plain.append(f"{path} {p.opts[0]}")
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(cli, "mc")
    assert plain == []
