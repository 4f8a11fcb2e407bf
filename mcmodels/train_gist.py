"""GistNet training by substitutability on the frozen base (``mcmodels/README.md``, section
"Corpus, training, evaluation").

Each step: a window of ``span + recent + horizon`` tokens of real text. Teacher: the base model on
all raw tokens. Student: the same window with ``[0, span)`` replaced by gists from a random
mixed-level tiling (level-2 gists made from level-1 gists, end to end), the ``recent`` tokens raw,
then the horizon; positions ``0 … len−1`` over the student's own sequence (one per gist), as the
runtime feeds the model. Loss on the horizon: KL(teacher ‖ student) + ``ce_weight`` · CE(targets).
Gradients flow through the frozen base into GistNet. The same code trains the content-free
:class:`SoftPrompt` baseline (``softprompt=True``).

Single process (CPU or one GPU): ``mc train gistnet --out runs/g1 ...``. Several GPUs (DDP)::

    torchrun --standalone --nproc_per_node=8 -m cli train gistnet --out runs/g1 --steps 20000 \\
        --batch 8 --span 4096 --recent 128 --horizon 128

(each rank draws its own windows; rank 0 logs, evaluates and checkpoints; bf16 autocast on CUDA).

Every ``eval_every`` steps a fixed set of dev-split windows (never the held-out test split) is
scored: KL, NLL, recovered fraction of level views, the content-free control, and gist
diversity (mean pairwise cosine between gists: near 1 means collapse). The best dev checkpoint
is kept as ``best``, the latest as ``last`` (with the optimizer state for ``resume``).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mcmodels import views
from mcmodels.checkpoint import load_gistnet, load_softprompt, save_checkpoint
from mcmodels.evaluate import WindowEval, derangement, hardware, pick_windows
from mcmodels.gistnet import GistNet, gist_diversity
from mcmodels.softprompt import SoftPrompt
from mcmodels.train_common import (
    Dist,
    MetricsLog,
    WindowSampler,
    autocast,
    command_line,
    lr_at,
    progress_bar,
    save_state,
    set_lr,
    set_seed,
)


@dataclass
class GistTrainConfig:
    steps: int = 600
    batch: int = 1
    span: int = 1024  # tokens replaced by gists (multiple of 1024 for level-2 views)
    recent: int = 128
    horizon: int = 64
    top_level: int = 2
    p_expand: float = 0.5  # chance a level-2 node is shown as its 32 level-1 children
    p_raw: float = 0.0  # chance a level-1 node is shown raw
    lr: float = 3e-4
    warmup: int = 50
    clip: float = 1.0
    weight_decay: float = 0.01
    ce_weight: float = 0.0
    seed: int = 0
    eval_every: int = 50
    eval_windows: int = 8
    ckpt_every: int = 50
    hidden: int = 256
    layers: int = 2
    heads: int = 4
    softprompt: bool = False
    save_dtype: str = "float32"


def _student(model, cfg, plan, emb, softprompt: bool):
    if softprompt:
        return torch.cat(
            [model.prefix(emb.shape[0], len(plan)).to(emb.dtype), emb[:, cfg.span :]], 1
        )
    gists = views.make_gists(model, emb, cfg.span, views.top_level(plan))
    return views.assemble(plan, emb, gists, cfg.span)


def unigram_counts(docs, vocab_size: int) -> torch.Tensor:
    """Token counts over ``docs`` (+1 smoothing): weights for the corpus-mean embedding."""
    c = np.ones(vocab_size, dtype=np.float64)
    for _, a in docs:
        c += np.bincount(a, minlength=vocab_size)[:vocab_size]
    return torch.from_numpy(c)


@torch.no_grad()
def dev_eval(base, model, we: WindowEval, cfg: GistTrainConfig, perm) -> dict:
    model.eval()
    out = {}
    for lv in we.levels:
        plan = we.plans[lv]
        if cfg.softprompt:
            nl = we.nll_of(lambda i, t, e, plan=plan: _student(model, cfg, plan, e, True))
        else:
            nl = we.gist_nll(lv, model)
        s = we.summary(nl, lv)
        out[f"{lv}_nll"], out[f"{lv}_recovered"] = s["nll"], s["recovered"]
        if not cfg.softprompt:
            ctl = we.summary(we.gist_nll(lv, model, source_perm=perm), lv)
            out[f"{lv}_control"] = ctl["recovered"]
        out[f"{lv}_gap"] = s["gap"]
    if not cfg.softprompt:
        emb = base.embed(we.tokens[:, : cfg.span].to(base.device))
        g1 = views.make_gists(model, emb, cfg.span, 1)[0].reshape(-1, base.d_model)
        out["diversity_l1"] = gist_diversity(g1[:256], model.emb_mean)
    model.train()
    nll = sum(v for k, v in out.items() if k.endswith("_nll"))
    return {**out, "dev_score": nll / max(1, len(we.levels))}


def train_gistnet(
    base,
    corpus,
    out: str | Path,
    cfg: GistTrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    device=None,
) -> dict:
    """Train (or resume) a GistNet — or the soft-prompt baseline — into the folder ``out``.

    Writes ``out/last.{safetensors,json}``, ``out/best.*``, ``out/state.pt`` (optimizer, step)
    and ``out/metrics.jsonl``. Returns the final record (metrics of the best checkpoint).

    (long on purpose: the loop's cadence of step, log, evaluate, keep the best and checkpoint
    reads best in one place; the set-up, the step and the evaluation are helpers.)
    """
    dist = Dist()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)
    dev = base.device
    kind = "softprompt" if cfg.softprompt else "gistnet"
    T = cfg.span + cfg.recent + cfg.horizon
    train_docs = corpus.tokens(base.tokenizer, "train", min_tokens=T)
    model = _new_model(base, corpus, cfg).to(dev)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    step0, best, elapsed0, commands = _resume(out, model, opt, cfg, dev, resume)
    dist.broadcast(model)
    sampler = WindowSampler(train_docs, T, seed=cfg.seed, rank=dist.rank)
    we = _dev_windows(base, corpus, cfg, T)
    perm = derangement(len(we.windows), cfg.seed)
    log = MetricsLog(out / "metrics.jsonl", dist.main)
    recipe = _recipe(cfg, corpus, commands, dist)
    if dist.main:
        # after a resume, rows for steps past the last checkpoint may appear twice: the later wins
        log.write({"event": "start" if step0 == 0 else "resume", "step": step0, **recipe})
    t_start = time.time() - elapsed0  # seconds trained count across resumes
    last_metrics: dict = {}
    bar = progress_bar(progress and dist.main, total=cfg.steps, initial=step0, desc=f"train {kind}")
    model.train()
    for step in range(step0, cfg.steps):
        row = _train_step(base, model, opt, dist, cfg, sampler, step)
        log.write(row)
        if bar is not None:
            bar.set_postfix(kl=f"{row['kl']:.3f}", gn=f"{row['grad_norm']:.2f}")
            bar.update(1)
        done = step + 1
        if not dist.main:
            continue
        run = {**recipe, "steps": done, "train_seconds": round(time.time() - t_start, 1)}
        if done % cfg.eval_every == 0 or done == cfg.steps:
            last_metrics = {"step": done, **dev_eval(base, model, we, cfg, perm)}
            log.write({"event": "dev", **last_metrics})
            if last_metrics["dev_score"] < best:
                best = last_metrics["dev_score"]
                save_checkpoint(
                    model, out / "best", base=base, dtype=cfg.save_dtype, name=kind, recipe=run,
                    metrics={"dev": last_metrics},
                )  # fmt: skip
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            save_checkpoint(
                model, out / "last", base=base, dtype="float32", name=kind, recipe=run,
                metrics={"dev": last_metrics},
            )  # fmt: skip
            save_state(
                out / "state.pt", opt=opt.state_dict(), step=done, best=best,
                elapsed=time.time() - t_start, commands=[run["command"], *run["resumed_with"]],
            )  # fmt: skip
    if bar is not None:
        bar.close()
    dist.close()
    return {"out": str(out), "steps": cfg.steps, "best_dev_score": best, "last": last_metrics}


def _recipe(cfg: GistTrainConfig, corpus, commands: list[str], dist: Dist) -> dict:
    """How the run was made, for every checkpoint: the first command line and those that
    resumed it."""
    return {
        "command": (commands or [command_line()])[0],
        "resumed_with": [*commands[1:], command_line()] if commands else [],
        "config": asdict(cfg),
        "data_manifest_hash": corpus.manifest_hash,
        "hardware": hardware(),
        "world_size": dist.world,
    }


def _new_model(base, corpus, cfg: GistTrainConfig):
    """A fresh GistNet (or SoftPrompt) whose mean embedding weighs tokens as the training
    split uses them."""
    counts = unigram_counts(corpus.tokens(base.tokenizer, "train"), base.vocab_size)
    if cfg.softprompt:
        return SoftPrompt.for_base(base, token_weights=counts)
    return GistNet.for_base(
        base, token_weights=counts, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads
    )


def _resume(out: Path, model, opt, cfg: GistTrainConfig, dev, resume: bool):
    """Load the last checkpoint and optimizer state into ``model`` and ``opt`` when resuming
    a run that has one. -> (first step, best dev score, seconds trained, command lines)."""
    state_path = out / "state.pt"
    if not (resume and state_path.is_file()):
        return 0, float("inf"), 0.0, []
    loader = load_softprompt if cfg.softprompt else load_gistnet
    model.load_state_dict(loader(out / "last").state_dict())
    st = torch.load(state_path, map_location=dev, weights_only=False)
    opt.load_state_dict(st["opt"])
    return st["step"], st["best"], st.get("elapsed", 0.0), st.get("commands", [])


def _dev_windows(base, corpus, cfg: GistTrainConfig, T: int) -> WindowEval:
    """The fixed dev windows every evaluation scores (the train split where there is no dev
    split: never the held-out test split)."""
    tok = base.tokenizer
    dev_docs = corpus.tokens(tok, "dev", min_tokens=T) or corpus.tokens(tok, "train", min_tokens=T)
    windows = pick_windows(
        dev_docs,
        span=cfg.span,
        recent=cfg.recent,
        horizon=cfg.horizon,
        n_windows=cfg.eval_windows,
        seed=cfg.seed,
    )
    return WindowEval(base, windows, span=cfg.span, recent=cfg.recent, horizon=cfg.horizon)


def _train_step(base, model, opt, dist: Dist, cfg: GistTrainConfig, sampler, step: int) -> dict:
    """One optimizer step on a batch of windows under a random mixed-level plan. -> the
    metrics row for the log."""
    t0 = time.time()
    dev = base.device
    lr = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
    set_lr(opt, lr)
    tokens = torch.as_tensor(sampler.batch(step, cfg.batch), dtype=torch.long, device=dev)
    rng = random.Random(cfg.seed * 1_000_003 + step)
    plan = views.plan_mixed(
        cfg.span, rng, top=cfg.top_level, p_expand=cfg.p_expand, p_raw=cfg.p_raw
    )
    targets = tokens[:, -cfg.horizon :]
    with autocast(dev):
        emb = base.embed(tokens)
        with torch.no_grad():
            t_lp = views.horizon_logprobs(base, emb, cfg.horizon)
        seq = _student(model, cfg, plan, emb, cfg.softprompt)
        s_lp = views.horizon_logprobs(base, seq, cfg.horizon)
    kl = views.kl(t_lp, s_lp).mean()
    ce = views.nll(s_lp, targets).mean()
    loss = kl + cfg.ce_weight * ce
    opt.zero_grad(set_to_none=True)
    loss.backward()
    dist.sync_grads(model)
    gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip))
    opt.step()
    return {
        "step": step + 1,
        "loss": dist.mean(loss.item()),
        "kl": dist.mean(kl.item()),
        "ce": dist.mean(ce.item()),
        "grad_norm": gnorm,
        "lr": lr,
        "n_entries": len(plan),
        "s_per_step": round(time.time() - t0, 3),
    }
