"""LensNet training on counterfactual targets (``mcmodels/README.md``, section "Corpus, training,
evaluation").

Phase 1, **targets** (expensive; frozen base + a GistNet, no grad): for sampled working contexts
— a random tiling of ``[0, span)`` by mixed-level entries (level 2, level 1, raw blocks), then the
``recent`` raw tail, then the horizon — measure the horizon loss ``L`` (mean NLL of the horizon
tokens) of the context as is, of every sampled **expand** (an entry replaced by its 32 children)
and every sampled **collapse** (a complete group of 32 siblings replaced by their parent). Then

    gain_i = L − L(expand i)        cost_i = L(collapse group(i)) − L

An allocator at equal budget pairs one expand with one collapse (each moves 31 positions), and the
pair is worth doing when ``gain_i − cost_j > 0``. The signed target ``y_i = gain_i − cost_i`` puts
both on one axis: ``> 0`` wants detail, ``< 0`` can give it up. Illegal directions are masked:
level 0 cannot expand (its gain is 0, not measured), the top level cannot collapse, the raw tail
is never a target. This tiling sampler is a training-data concern only; the runtime has its own.

Phase 2, **fit**: LensNet regresses ``scale · y`` (Huber) on the targets' training part; the dev
part reports the loss, sign accuracy and the rank correlation with ``y`` for LensNet and for the
non-learned scorers (recency, query–entry cosine similarity).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mcmodels import views
from mcmodels.checkpoint import load_lensnet, save_checkpoint
from mcmodels.evaluate import hardware
from mcmodels.lensnet import LensNet, entry_features
from mcmodels.train_common import (
    MetricsLog,
    WindowSampler,
    command_line,
    lr_at,
    progress_bar,
    save_state,
    set_lr,
    set_seed,
)

B = views.B


@dataclass
class LensTrainConfig:
    samples: int = 64  # working contexts to measure targets on
    span: int = 1024
    recent: int = 128
    horizon: int = 64
    query: int = 32  # newest raw tokens given to LensNet as the query
    top_level: int = 2
    p_expand: float = 0.6
    p_raw: float = 0.2
    max_actions: int = 24  # expands and collapses measured per context (each)
    variant_batch: int = 8
    steps: int = 300
    batch: int = 8
    lr: float = 1e-3
    warmup: int = 20
    clip: float = 1.0
    target_scale: float = 10.0
    dev_frac: float = 0.2
    seed: int = 0
    eval_every: int = 50
    hidden: int = 128
    layers: int = 2
    heads: int = 4


def expand_plan(plan, i):
    lv, s = plan[i]
    kids = [(lv - 1, s + c * B ** (lv - 1)) for c in range(B)]
    return plan[:i] + kids + plan[i + 1 :]


def sibling_groups(plan, top: int):
    """``[(first_index, level)]`` for every complete run of 32 siblings below ``top``."""
    out = []
    i = 0
    while i + B <= len(plan):
        lv, s = plan[i]
        if (
            lv < top
            and s % B ** (lv + 1) == 0
            and all(plan[i + c] == (lv, s + c * B**lv) for c in range(B))
        ):
            out.append((i, lv))
            i += B
        else:
            i += 1
    return out


def collapse_plan(plan, i, lv):
    return [*plan[:i], (lv + 1, plan[i][1]), *plan[i + B :]]


@torch.no_grad()
def _losses(base, gistnet, emb, targets, plans, cfg, top) -> list[float]:
    """Mean horizon NLL for each plan (all of equal length), batched."""
    gists = views.make_gists(gistnet, emb, cfg.span, top)
    out = []
    for k in range(0, len(plans), cfg.variant_batch):
        chunk = plans[k : k + cfg.variant_batch]
        seq = torch.cat([views.assemble(p, emb, gists, cfg.span) for p in chunk], 0)
        lp = views.horizon_logprobs(base, seq, cfg.horizon)
        out.extend(views.nll(lp, targets.expand(len(chunk), -1)).mean(-1).tolist())
    return out


@torch.no_grad()
def make_targets(
    base, gistnet, docs, cfg: LensTrainConfig, *, progress: bool = True, start: int = 0, into=None
):
    """Measure counterfactual targets for ``cfg.samples`` working contexts (see module doc)."""
    T = cfg.span + cfg.recent + cfg.horizon
    sampler = WindowSampler(docs, T, seed=cfg.seed + 7919)
    rows = list(into or [])
    it = range(start, cfg.samples)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="lens targets", unit="ctx", initial=start, total=cfg.samples)
    for n in it:
        rng = random.Random(cfg.seed * 7_000_003 + n)
        tok = torch.as_tensor(sampler.batch(n, 1), dtype=torch.long, device=base.device)
        emb = base.embed(tok)
        plan = views.plan_mixed(
            cfg.span, rng, top=cfg.top_level, p_expand=cfg.p_expand, p_raw=cfg.p_raw
        )
        l0, y, has = _target(base, gistnet, emb, tok[:, -cfg.horizon :], plan, cfg, rng)
        gists = views.make_gists(gistnet, emb, cfg.span, cfg.top_level)
        seq = views.assemble(plan, emb, gists, cfg.span)[0, : len(plan) + cfg.recent]
        now = cfg.span + cfg.recent
        rows.append(
            {
                "entries": seq.float().cpu().half(),
                "levels": torch.tensor([lv for lv, _ in plan] + [0] * cfg.recent),
                "starts": torch.tensor([s for _, s in plan] + list(range(cfg.span, now))),
                "now": now,
                "query": emb[0, now - cfg.query : now].float().cpu().half(),
                "y": torch.cat([y, torch.zeros(cfg.recent)]),
                "tmask": torch.cat([has, torch.zeros(cfg.recent, dtype=torch.bool)]),
                "base_loss": l0,
            }
        )
    return rows


def _target(base, gistnet, emb, tgt, plan, cfg: LensTrainConfig, rng: random.Random):
    """Measure one working context ``plan``: the horizon loss as it is, what expanding a
    few of its gists gains and what collapsing a few sibling groups costs (at most
    ``cfg.max_actions`` of each, drawn with ``rng``). -> (loss, gain - cost per entry, which
    entries were measured)."""
    top = cfg.top_level
    (l0,) = _losses(base, gistnet, emb, tgt, [plan], cfg, top)
    exp_idx = [i for i, (lv, _) in enumerate(plan) if lv >= 1]
    rng.shuffle(exp_idx)
    exp_idx = sorted(exp_idx[: cfg.max_actions])
    groups = sibling_groups(plan, top)
    rng.shuffle(groups)
    groups = sorted(groups[: cfg.max_actions])
    gain = torch.zeros(len(plan))
    cost = torch.zeros(len(plan))
    has = torch.zeros(len(plan), dtype=torch.bool)
    if exp_idx:
        le = _losses(base, gistnet, emb, tgt, [expand_plan(plan, i) for i in exp_idx], cfg, top)
        for i, v in zip(exp_idx, le, strict=True):
            gain[i] = l0 - v
            has[i] = True
    if groups:
        lc = _losses(
            base, gistnet, emb, tgt, [collapse_plan(plan, i, lv) for i, lv in groups], cfg, top
        )
        for (i, _), v in zip(groups, lc, strict=True):
            cost[i : i + B] = v - l0
            has[i : i + B] = True
    return l0, gain - cost, has


def collate(rows, device):
    n = max(len(r["levels"]) for r in rows)
    b = len(rows)
    d = rows[0]["entries"].shape[-1]
    ent = torch.zeros(b, n, d)
    lev = torch.zeros(b, n, dtype=torch.long)
    feat = torch.zeros(b, n, 4)
    mask = torch.zeros(b, n, dtype=torch.bool)
    y = torch.zeros(b, n)
    tm = torch.zeros(b, n, dtype=torch.bool)
    for k, r in enumerate(rows):
        m = len(r["levels"])
        ent[k, :m] = r["entries"].float()
        lev[k, :m] = r["levels"]
        feat[k, :m] = entry_features(r["levels"], r["starts"], r["now"])
        mask[k, :m] = True
        y[k, :m] = r["y"]
        tm[k, :m] = r["tmask"]
    q = torch.stack([r["query"].float() for r in rows])
    return [t.to(device) for t in (ent, lev, feat, q, mask, y, tm)]


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() < 3:
        return float("nan")
    ra = a.argsort().argsort().float()
    rb = b.argsort().argsort().float()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = (ra.norm() * rb.norm()).item()
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


@torch.no_grad()
def score_report(lens, rows, device, scale: float, center: torch.Tensor | None = None) -> dict:
    """Dev metrics for LensNet and the non-learned scorers, on the same targets."""
    rep: dict[str, list[float]] = {"lensnet": [], "recency": [], "similarity": []}
    sign, loss, cnt = 0.0, 0.0, 0
    for r in rows:
        ent, lev, feat, q, mask, y, tm = collate([r], device)
        s = lens(ent, lev, feat, q, mask)[0] if lens is not None else None
        t = tm[0]
        if t.sum() < 3:
            continue
        yy = y[0][t]
        if s is not None:
            ss = s[t]
            rep["lensnet"].append(_spearman(ss, yy))
            sign += float(((ss > 0) == (yy > 0)).float().sum())
            loss += float(F.huber_loss(ss, yy * scale, reduction="sum"))
            cnt += int(t.sum())
        rep["recency"].append(_spearman(-feat[0, :, 1][t], yy))  # newer → more detail
        c = center.to(device) if center is not None else ent[0].mean(0)
        qm = F.normalize(q[0].mean(0, keepdim=True) - c, dim=-1)
        em = F.normalize(ent[0] - c, dim=-1)
        rep["similarity"].append(_spearman((em @ qm.T).squeeze(-1)[t], yy))
    out = {f"spearman_{k}": float(np.nanmean(v)) if v else float("nan") for k, v in rep.items()}
    if cnt:
        out["dev_loss"] = loss / cnt
        out["sign_acc"] = sign / cnt
    return out


def train_lensnet(
    base, gistnet, corpus, out, cfg: LensTrainConfig, *, resume: bool = False, progress: bool = True
) -> dict:
    """Measure targets (cached in ``out/targets.pt``, resumable), then fit LensNet; writes
    ``out/best.*``, ``out/last.*``, ``out/state.pt`` and ``out/metrics.jsonl``.

    (long on purpose: the loop's cadence of step, log, evaluate, keep the best and checkpoint
    reads best in one place; the targets, the resume and the step are helpers.)"""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)
    dev = base.device
    log = MetricsLog(out / "metrics.jsonl")
    t0 = time.time()
    rows = _targets(base, gistnet, corpus, cfg, out / "targets.pt", progress)
    target_seconds = round(time.time() - t0, 1)
    n_dev = max(1, int(len(rows) * cfg.dev_frac))
    train_rows, dev_rows = rows[:-n_dev], rows[-n_dev:]
    lens = LensNet.for_base(base, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads).to(dev)
    opt = torch.optim.AdamW(lens.parameters(), lr=cfg.lr, weight_decay=0.01)
    step0, best = 0, float("inf")
    if resume and (out / "state.pt").is_file():
        lens.load_state_dict(load_lensnet(out / "last").state_dict())
        st = torch.load(out / "state.pt", weights_only=False)
        opt.load_state_dict(st["opt"])
        step0, best = st["step"], st["best"]
    recipe = {
        "command": command_line(),
        "config": asdict(cfg),
        "data_manifest_hash": corpus.manifest_hash,
        "gistnet": getattr(gistnet, "checkpoint_hash", None),
        "hardware": hardware(),
        "target_seconds": target_seconds,
    }
    center = lens.emb_mean  # the same centring for the similarity scorer in every report
    baseline = score_report(None, dev_rows, dev, cfg.target_scale, center)
    log.write({"event": "targets", "n": len(rows), "seconds": target_seconds, **baseline})
    bar = progress_bar(progress, total=cfg.steps, initial=step0, desc="train lensnet")
    last: dict = {}
    t_fit = time.time()
    for step in range(step0, cfg.steps):
        loss, lr = _lens_step(lens, opt, cfg, train_rows, dev_rows, step, dev)
        log.write({"step": step + 1, "loss": loss, "lr": lr})
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.update(1)
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            lens.eval()
            last = {"step": done, **score_report(lens, dev_rows, dev, cfg.target_scale, center)}
            lens.train()
            log.write({"event": "dev", **last})
            rec = {**recipe, "steps": done, "fit_seconds": round(time.time() - t_fit, 1)}
            metrics = {"dev": last, "baselines": baseline}
            if last.get("dev_loss", float("inf")) < best:
                best = last["dev_loss"]
                save_checkpoint(
                    lens, out / "best", base=base, recipe=rec, metrics=metrics, name="lensnet"
                )
            save_checkpoint(
                lens, out / "last", base=base, recipe=rec, metrics=metrics, name="lensnet"
            )
            save_state(out / "state.pt", opt=opt.state_dict(), step=done, best=best)
    if bar is not None:
        bar.close()
    return {
        "out": str(out),
        "targets": len(rows),
        "best_dev_loss": best,
        "last": last,
        "baselines": baseline,
    }


def _targets(base, gistnet, corpus, cfg: LensTrainConfig, path: Path, progress: bool) -> list:
    """The measured targets, ``cfg.samples`` of them: those cached at ``path`` and the rest
    measured a few at a time, each few saved (a stopped run resumes where it was)."""
    T = cfg.span + cfg.recent + cfg.horizon
    rows = torch.load(path, weights_only=False) if path.is_file() else []
    if len(rows) >= cfg.samples:
        return rows
    docs = corpus.tokens(base.tokenizer, "train", min_tokens=T)
    chunk = 8
    while len(rows) < cfg.samples:
        stop = min(cfg.samples, len(rows) + chunk)
        sub = LensTrainConfig(**{**asdict(cfg), "samples": stop})
        rows = make_targets(
            base, gistnet.eval(), docs, sub, progress=progress, start=len(rows), into=rows
        )
        torch.save(rows, path)
    return rows


def _lens_step(lens, opt, cfg: LensTrainConfig, train_rows: list, dev_rows: list, step, dev):
    """One optimizer step on a batch drawn from ``train_rows`` (every dev row where there
    are none: a tiny run). -> (loss, learning rate)."""
    rng = np.random.default_rng([cfg.seed, step])
    pick = (
        [train_rows[int(i)] for i in rng.integers(0, len(train_rows), cfg.batch)]
        if train_rows
        else dev_rows
    )
    ent, lev, feat, q, mask, y, tm = collate(pick, dev)
    lr = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
    set_lr(opt, lr)
    s = lens(ent, lev, feat, q, mask)
    loss = F.huber_loss(s[tm], y[tm] * cfg.target_scale) if tm.any() else s.sum() * 0
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(lens.parameters(), cfg.clip)
    opt.step()
    return loss.item(), lr
