"""`mc corpus build`, `mc train gistnet|lensnet|softprompt`, `mc eval recovered`: thin wrappers
over mcmodels (argument parsing and printing only)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli import options
from cli.main import cli
from cli.options import base_alias_option, config_options
from cli.params import FINITE_FLOAT


def _threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def _base(name: str, device: str | None):
    import mcmodels

    return mcmodels.load_base(name, device=device)


model_option = options.model_option("base_name")


def trained_gistnet(base, path: str | None):
    """``mcmodels.pick_gistnet`` (a trained one only); where none ships, the error names the
    option that gives one."""
    import mcmodels

    try:
        return mcmodels.pick_gistnet(base, path)
    except mcmodels.CheckpointError as e:
        if path is None:
            raise mcmodels.CheckpointError(f"{e} (--gistnet PATH)") from None
        raise


def _corpus(path: str | None):
    from mcmodels.corpus import build_corpus

    return build_corpus(path, progress=True)


_common = [
    model_option,
    base_alias_option,
    click.option(
        "--corpus",
        "corpus_dir",
        default=None,
        help="Corpus folder (built on first use; default $MC_CACHE/corpus/default).",
    ),
    click.option("--device", default=None, help="cpu / cuda (default: cuda if present)."),
    click.option("--threads", type=int, default=None, help="torch CPU threads."),
    click.option("--seed", type=int, default=0, show_default=True),
]


def common(f):
    for opt in reversed(_common):
        f = opt(f)
    return f


@cli.group("corpus")
def corpus_group() -> None:
    """The offline training corpus (text already on this machine)."""


@corpus_group.command("build")
@click.option("--out", default=None, help="Folder (default $MC_CACHE/corpus/default).")
@click.option("--max-mb", type=FINITE_FLOAT, default=64.0, show_default=True)
@click.option("--max-docs", type=int, default=None)
@click.option("--force", is_flag=True, help="Rebuild even if it exists.")
@click.option(
    "--generate", type=int, default=0, help="Also sample N documents from the base model."
)
@click.option("--generate-tokens", type=int, default=2048, show_default=True)
@model_option
@base_alias_option
def corpus_build(out, max_mb, max_docs, force, generate, generate_tokens, base_name) -> None:
    """Gather Python source, changelogs, licences and man pages into a corpus with a manifest."""
    from mcmodels.corpus import build_corpus, generate_texts

    extra = generate_texts(_base(base_name, None), generate, generate_tokens) if generate else None
    c = build_corpus(
        out, max_mb=max_mb, max_docs=max_docs, force=force or bool(extra), extra_texts=extra
    )
    m = c.manifest
    click.echo(
        json.dumps(
            {k: m[k] for k in ("manifest_hash", "n_docs", "chars", "splits")}
            | {"path": str(c.root)}
        )
    )


@cli.group("train")
def train_group() -> None:
    """Train GistNet / LensNet (CPU at small scale, GPU with bf16; torchrun for several GPUs)."""


@train_group.command("gistnet")
@common
@click.option("--out", required=True, help="Run folder (checkpoints, metrics.jsonl).")
@config_options(
    "mcmodels.train_gist:GistTrainConfig",
    {
        "steps": {"type": int},
        "batch": {"type": int},
        "span": {"type": int, "help": "Tokens replaced by gists."},
        "recent": {"type": int, "help": "Raw tokens after the gists."},
        "horizon": {"type": int, "help": "Scored tokens."},
        "top_level": {"type": int},
        "p_expand": {"type": FINITE_FLOAT},
        "lr": {"type": FINITE_FLOAT},
        "warmup": {"type": int},
        "clip": {"type": FINITE_FLOAT},
        "ce_weight": {"type": FINITE_FLOAT},
        "eval_every": {"type": int},
        "eval_windows": {"type": int},
        "ckpt_every": {"type": int},
        "hidden": {"type": int},
        "layers": {"type": int},
        "heads": {"type": int},
        "save_dtype": {"type": click.Choice(["float32", "float16"])},
        "softprompt": {
            "is_flag": True,
            "help": "Train the content-free soft-prompt baseline instead.",
        },
    },
)
@click.option("--resume", is_flag=True, help="Continue from OUT/last + OUT/state.pt.")
def train_gistnet_cmd(base_name, corpus_dir, device, threads, seed, out, resume, **kw) -> None:
    """Substitutability training: KL(teacher on raw ‖ student with gists) on a horizon.

    Several GPUs: torchrun --standalone --nproc_per_node=N -m cli train gistnet --out DIR ...
    """
    from mcmodels.train_gist import GistTrainConfig, train_gistnet

    _threads(threads)
    base = _base(base_name, device)
    cfg = GistTrainConfig(seed=seed, **kw)
    res = train_gistnet(base, _corpus(corpus_dir), out, cfg, resume=resume)
    click.echo(json.dumps(res))


@train_group.command("lensnet")
@common
@click.option("--out", required=True)
@click.option(
    "--gistnet", "gist_path", default=None, help="GistNet checkpoint (default: the shipped one)."
)
@config_options(
    "mcmodels.train_lens:LensTrainConfig",
    {
        "samples": {"type": int, "help": "Working contexts to measure."},
        "span": {"type": int},
        "recent": {"type": int},
        "horizon": {"type": int},
        "max_actions": {"type": int},
        "steps": {"type": int},
        "batch": {"type": int},
        "lr": {"type": FINITE_FLOAT},
        "eval_every": {"type": int},
    },
)
@click.option("--resume", is_flag=True)
def train_lensnet_cmd(
    base_name, corpus_dir, device, threads, seed, out, gist_path, resume, **kw
) -> None:
    """Counterfactual targets (expand gain − collapse cost), then fit LensNet."""
    from mcmodels.train_lens import LensTrainConfig, train_lensnet

    _threads(threads)
    base = _base(base_name, device)
    gist = trained_gistnet(base, gist_path)
    res = train_lensnet(
        base, gist, _corpus(corpus_dir), out, LensTrainConfig(seed=seed, **kw), resume=resume
    )
    click.echo(json.dumps(res))


@cli.group("eval")
def eval_group() -> None:
    """Evaluations of the models."""


@eval_group.command("recovered")
@common
@click.option(
    "--gistnet", "gist_path", default=None, help="GistNet checkpoint (default: the shipped one)."
)
@click.option(
    "--softprompt", "sp_path", default=None, help="Trained soft-prompt checkpoint (baseline)."
)
@config_options(
    "mcmodels.evaluate:EvalConfig",
    {
        "span": {"type": int, "help": "Older tokens shown as gists."},
        "recent": {"type": int},
        "horizon": {"type": int},
        "n_windows": {"type": int, "flag": "--windows"},
        "per_doc": {"type": int},
        "min_doc_tokens": {"type": int, "help": "Prefer long held-out documents."},
        "split": {"type": str},
    },
)
@click.option("--out", "out_path", default=None, help="Write the JSON here (also printed).")
def eval_recovered(
    base_name,
    corpus_dir,
    device,
    threads,
    seed,
    gist_path,
    sp_path,
    span,
    recent,
    horizon,
    n_windows,
    per_doc,
    min_doc_tokens,
    split,
    out_path,
) -> None:
    """Recovered fraction (trunc − gist)/(trunc − full) per level, with baselines and the control."""
    import mcmodels
    from mcmodels.evaluate import METHODS, eval_windows, recovered

    _threads(threads)
    base = _base(base_name, device)
    gist = trained_gistnet(base, gist_path)
    corpus = _corpus(corpus_dir)
    windows, min_used = eval_windows(
        base, corpus, split=split, span=span, recent=recent, horizon=horizon,
        n_windows=n_windows, per_doc=per_doc, min_doc_tokens=min_doc_tokens, seed=seed,
    )  # fmt: skip
    sp = mcmodels.load_softprompt(sp_path, device=base.device) if sp_path else None
    methods = (*METHODS, "softprompt") if sp is not None else METHODS
    res = recovered(
        base,
        gist,
        windows,
        span=span,
        recent=recent,
        horizon=horizon,
        methods=methods,
        softprompt=sp,
        seed=seed,
        progress=True,
    )
    res.update(_provenance(base, gist, sp, corpus, split=split, min_used=min_used, seed=seed))
    text = json.dumps(res, indent=2)
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(text + "\n")
    click.echo(text)


def _provenance(base, gist, sp, corpus, *, split: str, min_used: int, seed: int) -> dict:
    """What an evaluation ran on, for its JSON: command, models, corpus and windows."""
    from mcmodels.train_common import command_line

    return {
        "command": command_line(),
        "base": base.binding(),
        "gistnet": {
            "id": gist.checkpoint_id,
            "hash": gist.checkpoint_hash,
            "recipe": getattr(gist, "record", {}).get("recipe"),
        },
        "softprompt": sp.checkpoint_hash if sp is not None else None,
        "corpus_manifest_hash": corpus.manifest_hash,
        "split": split,
        "min_doc_tokens": min_used,
        "seed": seed,
    }
