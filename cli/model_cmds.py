"""`mc corpus build`, `mc train gistnet|lensnet|softprompt`, `mc eval recovered`: thin wrappers
over mcmodels (argument parsing and printing only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from cli.main import cli


def _threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def _base(name: str, device: str | None):
    import mcmodels

    return mcmodels.load_base(name, device=device)


def pick_gistnet(base, path: str | None):
    """The GistNet at ``path``, else the one shipped for ``base``; a clear error if neither."""
    import mcmodels

    gist = (
        mcmodels.load_gistnet(path, device=base.device) if path else mcmodels.default_gistnet(base)
    )
    if gist is None:
        raise mcmodels.CheckpointError(
            "no GistNet for this base model: pass --gistnet PATH (train one first)"
        )
    return gist


def _corpus(path: str | None):
    from mcmodels.corpus import build_corpus

    return build_corpus(path, progress=True)


_common = [
    click.option(
        "--base",
        "base_name",
        default="smollm2-135m-instruct",
        show_default=True,
        help="Base model: name, 'tiny', HF folder or .gguf.",
    ),
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
@click.option("--max-mb", type=float, default=64.0, show_default=True)
@click.option("--max-docs", type=int, default=None)
@click.option("--force", is_flag=True, help="Rebuild even if it exists.")
@click.option(
    "--generate", type=int, default=0, help="Also sample N documents from the base model."
)
@click.option("--generate-tokens", type=int, default=2048, show_default=True)
@click.option("--base", "base_name", default="smollm2-135m-instruct", show_default=True)
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
@click.option("--steps", type=int, default=600, show_default=True)
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--span", type=int, default=1024, show_default=True, help="Tokens replaced by gists.")
@click.option(
    "--recent", type=int, default=128, show_default=True, help="Raw tokens after the gists."
)
@click.option("--horizon", type=int, default=64, show_default=True, help="Scored tokens.")
@click.option("--top-level", type=int, default=2, show_default=True)
@click.option("--p-expand", type=float, default=0.5, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--warmup", type=int, default=50, show_default=True)
@click.option("--clip", type=float, default=1.0, show_default=True)
@click.option("--ce-weight", type=float, default=0.0, show_default=True)
@click.option("--eval-every", type=int, default=50, show_default=True)
@click.option("--eval-windows", type=int, default=8, show_default=True)
@click.option("--ckpt-every", type=int, default=50, show_default=True)
@click.option("--hidden", type=int, default=256, show_default=True)
@click.option("--layers", type=int, default=2, show_default=True)
@click.option("--heads", type=int, default=4, show_default=True)
@click.option(
    "--save-dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True
)
@click.option(
    "--softprompt", is_flag=True, help="Train the content-free soft-prompt baseline instead."
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
@click.option(
    "--samples", type=int, default=64, show_default=True, help="Working contexts to measure."
)
@click.option("--span", type=int, default=1024, show_default=True)
@click.option("--recent", type=int, default=128, show_default=True)
@click.option("--horizon", type=int, default=64, show_default=True)
@click.option("--max-actions", type=int, default=24, show_default=True)
@click.option("--steps", type=int, default=300, show_default=True)
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--eval-every", type=int, default=50, show_default=True)
@click.option("--resume", is_flag=True)
def train_lensnet_cmd(
    base_name, corpus_dir, device, threads, seed, out, gist_path, resume, **kw
) -> None:
    """Counterfactual targets (expand gain − collapse cost), then fit LensNet."""
    from mcmodels.train_lens import LensTrainConfig, train_lensnet

    _threads(threads)
    base = _base(base_name, device)
    gist = pick_gistnet(base, gist_path)
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
@click.option(
    "--span", type=int, default=2048, show_default=True, help="Older tokens shown as gists."
)
@click.option("--recent", type=int, default=128, show_default=True)
@click.option("--horizon", type=int, default=128, show_default=True)
@click.option("--windows", "n_windows", type=int, default=16, show_default=True)
@click.option("--per-doc", type=int, default=1, show_default=True)
@click.option(
    "--min-doc-tokens",
    type=int,
    default=12000,
    show_default=True,
    help="Prefer long held-out documents.",
)
@click.option("--split", default="test", show_default=True)
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
    from mcmodels.evaluate import METHODS, pick_windows, recovered
    from mcmodels.train_common import command_line

    _threads(threads)
    base = _base(base_name, device)
    gist = pick_gistnet(base, gist_path)
    corpus = _corpus(corpus_dir)
    T = span + recent + horizon
    docs = corpus.tokens(base.tokenizer, split, min_tokens=max(T, min_doc_tokens))
    min_used = max(T, min_doc_tokens)
    if len(docs) < n_windows // max(per_doc, 1):
        docs = corpus.tokens(base.tokenizer, split, min_tokens=T)
        min_used = T
    windows = pick_windows(
        docs,
        span=span,
        recent=recent,
        horizon=horizon,
        n_windows=n_windows,
        per_doc=per_doc,
        seed=seed,
    )
    if not windows:
        raise mcmodels.CorpusError(f"no {split} document has {T} tokens")
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
    res.update(
        {
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
    )
    text = json.dumps(res, indent=2)
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(text + "\n")
    click.echo(text)


os.environ.setdefault("HF_HUB_OFFLINE", "1")
