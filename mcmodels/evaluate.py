"""Recovered fraction: how much of the full-context gain gists win back at the same budget.

For each held-out window (``span`` older tokens, ``recent`` raw tokens, ``horizon`` scored
tokens), with the same horizon tokens everywhere:

* ``full``: all ``span + recent`` tokens raw before the horizon;
* ``trunc``: ``g`` neutral leading positions (the document-separator embedding) + the ``recent``
  raw tokens, where ``g`` is the number of gists the gist view uses, so truncation is not
  penalised for starting cold (``trunc_plain`` without them is reported too);
* gist views: the older ``span`` tokens as gists, then the same ``recent`` raw tokens, for the
  levels ``l1`` (all level-1), ``l2`` (all level-2) and ``mixed`` (oldest half level-2, rest
  level-1), and the methods ``trained`` (the given GistNet), ``untrained`` (same architecture,
  fresh init), ``mean`` (plain mean of the 32 inputs), ``control`` (the trained GistNet on a
  *different* document's tokens, shuffled across windows: content-free) and ``softprompt`` (a
  trained content-free prefix, when one is given).

``recovered = (trunc − gist) / (trunc − full)``, computed on token-weighted mean NLLs; the raw gap
``trunc − full`` (nats/token) is reported beside every fraction, and ``trained − control``.
``recovered_vs_plain`` uses ``trunc_plain`` instead: measured on SmolLM2, 32 repeated separator
tokens in front of the raw tail *raise* its NLL by ~0.5 nats/token, so the neutral-position
baseline flatters every gist view; only differences between methods (above all
``trained − control``) are evidence. The ``mixed`` view needs ``span ≥ 2048``.
"""

from __future__ import annotations

import platform
import random
import time
from dataclasses import dataclass

import numpy as np
import torch

from mcmodels import views
from mcmodels.gistnet import GistNet, mean_pool_gist

LEVELS = ("l1", "l2", "mixed")
METHODS = ("trained", "untrained", "mean", "control")


@dataclass
class EvalConfig:
    """What the recovered-fraction evaluation reads by default (``eval_windows``, ``recovered``;
    ``mc eval recovered`` shows these as its flags' defaults)."""

    span: int = 2048  # older tokens shown as gists (the mixed view needs >= 2048)
    recent: int = 128  # raw tokens between the gists and the scored horizon
    horizon: int = 128  # scored tokens
    n_windows: int = 16
    per_doc: int = 1
    min_doc_tokens: int = 12000  # prefer long documents: the span is far from a doc's start
    split: str = "test"


def level_plan(level: str, span: int) -> list[tuple[int, int]]:
    if level == "l1":
        return views.plan_uniform(span, 1)
    if level == "l2":
        return views.plan_uniform(span, 2)
    if level == "mixed":
        return views.plan_coarse_old(span, max(1, (span // 1024) // 2))
    raise ValueError(f"unknown level view {level!r}")


def pick_windows(
    docs, *, span: int, recent: int, horizon: int, n_windows: int, per_doc: int = 1, seed: int = 0
):
    """Windows ``[(name, ids[T])]`` from ``docs`` (``[(name, ids)]``): each doc's last T tokens,
    then evenly spaced earlier windows, up to ``per_doc`` per doc and ``n_windows`` in all."""
    T = span + recent + horizon
    rng = random.Random(seed)
    docs = sorted([d for d in docs if len(d[1]) >= T], key=lambda d: d[0])
    rng.shuffle(docs)
    out = []
    for name, ids in docs:
        n = len(ids)
        k = min(per_doc, n // T)
        for j in range(k):
            end = n - j * T
            out.append((name, np.asarray(ids[end - T : end])))
        if len(out) >= n_windows:
            break
    return out[:n_windows]


def eval_windows(
    base,
    corpus,
    *,
    split: str = EvalConfig.split,
    span: int = EvalConfig.span,
    recent: int = EvalConfig.recent,
    horizon: int = EvalConfig.horizon,
    n_windows: int = EvalConfig.n_windows,
    per_doc: int = EvalConfig.per_doc,
    min_doc_tokens: int = EvalConfig.min_doc_tokens,
    seed: int = 0,
) -> tuple[list, int]:
    """The windows an evaluation reads from ``corpus``'s ``split``: long documents first (at
    least ``min_doc_tokens``, so the gisted span is far from a document's start), any document
    long enough for one window when there are too few of those. Returns the windows and the
    minimum document length used; ``CorpusError`` when no document is long enough."""
    from mcmodels.errors import CorpusError

    T = span + recent + horizon
    min_used = max(T, min_doc_tokens)
    docs = corpus.tokens(base.tokenizer, split, min_tokens=min_used)
    if len(docs) < n_windows // max(per_doc, 1):
        min_used = T
        docs = corpus.tokens(base.tokenizer, split, min_tokens=T)
    windows = pick_windows(docs, span=span, recent=recent, horizon=horizon,
                           n_windows=n_windows, per_doc=per_doc, seed=seed)  # fmt: skip
    if not windows:
        raise CorpusError(f"no {split} document has {T} tokens")
    return windows, min_used


class WindowEval:
    """Caches the GistNet-independent parts (full, trunc) for a fixed set of windows."""

    def __init__(
        self, base, windows, *, span: int, recent: int, horizon: int, levels=LEVELS, batch: int = 1
    ):
        self.base, self.windows = base, windows
        self.span, self.recent, self.horizon, self.batch = span, recent, horizon, batch
        # mixed needs room for level-2 *and* level-1 gists: span ≥ 2048
        self.levels = [
            lv
            for lv in levels
            if not (lv in ("l2", "mixed") and span % 1024) and not (lv == "mixed" and span < 2048)
        ]
        self.plans = {lv: level_plan(lv, span) for lv in self.levels}
        self.tokens = torch.tensor(np.stack([w[1] for w in windows]), dtype=torch.long)
        self.targets = self.tokens[:, -horizon:]
        self._cache: dict[str, torch.Tensor] = {}

    def _batches(self):
        for i in range(0, len(self.windows), self.batch):
            yield i, self.tokens[i : i + self.batch].to(self.base.device)

    @torch.no_grad()
    def nll_of(self, build) -> torch.Tensor:
        """Per-token NLL [n_windows, horizon] for sequences built by ``build(i, tokens, emb)``."""
        rows = []
        for i, tok in self._batches():
            emb = self.base.embed(tok)
            seq = build(i, tok, emb)
            lp = views.horizon_logprobs(self.base, seq, self.horizon)
            rows.append(views.nll(lp, tok[:, -self.horizon :]).float().cpu())
        return torch.cat(rows)

    def full(self) -> torch.Tensor:
        if "full" not in self._cache:
            self._cache["full"] = self.nll_of(lambda i, t, e: e)
        return self._cache["full"]

    def trunc(self, n_neutral: int) -> torch.Tensor:
        key = f"trunc{n_neutral}"
        if key not in self._cache:

            def build(i, t, e):
                tail = e[:, self.span :]
                if n_neutral == 0:
                    return tail
                return torch.cat(
                    [views.neutral_entries(self.base, e.shape[0], n_neutral).to(e.dtype), tail], 1
                )

            self._cache[key] = self.nll_of(build)
        return self._cache[key]

    def gist_nll(self, level: str, gistfn, *, source_perm=None) -> torch.Tensor:
        """NLL with the older span as gists made by ``gistfn``; ``source_perm[i]`` = the window
        whose tokens make window i's gists (the content-free control)."""
        plan = self.plans[level]
        top = views.top_level(plan)
        all_tok = self.tokens.to(self.base.device)

        def build(i, t, e):
            src = e
            if source_perm is not None:
                idx = torch.tensor([source_perm[i + k] for k in range(t.shape[0])], device=t.device)
                src = self.base.embed(all_tok[idx])
            gists = views.make_gists(gistfn, src, self.span, top)
            return views.assemble(plan, e, gists, self.span)

        return self.nll_of(build)

    def summary(self, nll_gist: torch.Tensor, level: str) -> dict:
        g = len(self.plans[level])
        full = float(self.full().mean())
        tr = float(self.trunc(g).mean())
        gi = float(nll_gist.mean())
        gap = tr - full
        plain = float(self.trunc(0).mean())
        gap_plain = plain - full
        return {
            "nll": gi,
            "recovered": (tr - gi) / gap if abs(gap) > 1e-9 else float("nan"),
            "gap": gap,
            # against truncation without the neutral leading positions (which can hurt it)
            "recovered_vs_plain": (plain - gi) / gap_plain
            if abs(gap_plain) > 1e-9
            else float("nan"),
        }


def derangement(n: int, seed: int = 0) -> list[int]:
    """A permutation with no fixed point (window i takes another window's gists)."""
    if n < 2:
        return list(range(n))
    rng = random.Random(seed)
    while True:
        p = list(range(n))
        rng.shuffle(p)
        if all(p[i] != i for i in range(n)):
            return p


def recovered(
    base,
    gistnet,
    windows,
    *,
    span: int = EvalConfig.span,
    recent: int = EvalConfig.recent,
    horizon: int = EvalConfig.horizon,
    levels=LEVELS,
    methods=METHODS,
    softprompt=None,
    seed: int = 0,
    batch: int = 1,
    progress: bool = False,
) -> dict:
    """The recovered-fraction evaluation (see the module doc) on ``windows`` ``[(name, ids[T])]``
    (``T = span + recent + horizon``; see :func:`pick_windows`). Returns a JSON-ready dict."""
    t0 = time.time()
    we = WindowEval(
        base, windows, span=span, recent=recent, horizon=horizon, levels=levels, batch=batch
    )
    gfns = _gisters(base, gistnet, methods, seed)
    perm = derangement(len(windows), seed)
    full = we.full()
    res = {
        "n_windows": len(windows),
        "n_horizon_tokens": int(full.numel()),
        "docs": sorted({w[0] for w in windows}),
        "span": span,
        "recent": recent,
        "horizon": horizon,
        "nll_full": float(full.mean()),
        "nll_trunc_plain": float(we.trunc(0).mean()),
        "levels": {},
    }
    per_window = _score_views(we, res, methods, gfns, perm, softprompt, progress)
    for lv, row in res["levels"].items():
        if "trained" in row and "control" in row:
            _compare_to_control(row, per_window[lv])
    res["seconds"] = round(time.time() - t0, 1)
    res["hardware"] = hardware()
    return res


def _score_views(we: WindowEval, res: dict, methods, gfns, perm, softprompt, progress: bool):
    """Score every (level, method) view into ``res["levels"]``. -> each view's NLL per
    window, by level and method."""
    per_window: dict[str, dict[str, torch.Tensor]] = {}
    todo = [
        (lv, m) for lv in we.levels for m in methods if m != "softprompt" or softprompt is not None
    ]
    it = todo
    if progress:
        from tqdm import tqdm

        it = tqdm(todo, desc="eval", unit="view")
    for lv, m in it:
        if lv not in res["levels"]:
            g = len(we.plans[lv])
            res["levels"][lv] = {
                "n_gists": g,
                "budget": g + we.recent,
                "nll_full": res["nll_full"],
                "nll_trunc": float(we.trunc(g).mean()),
                "gap": float(we.trunc(g).mean()) - res["nll_full"],
            }
        if m == "control":
            nl = we.gist_nll(lv, gfns["trained"], source_perm=perm)
        elif m == "softprompt":
            nl = _softprompt_nll(we, lv, softprompt)
        else:
            nl = we.gist_nll(lv, gfns[m])
        res["levels"][lv][m] = we.summary(nl, lv)
        per_window.setdefault(lv, {})[m] = nl.mean(1)
    return per_window


def _softprompt_nll(we: WindowEval, lv: str, softprompt) -> torch.Tensor:
    """Horizon NLL with the level's gists replaced by as many soft-prompt vectors."""
    g, span = len(we.plans[lv]), we.span
    return we.nll_of(
        lambda i, t, e: torch.cat([softprompt.prefix(e.shape[0], g).to(e.dtype), e[:, span:]], 1)
    )


def _gisters(base, gistnet, methods, seed: int) -> dict:
    """The gist functions the ``methods`` compare, by name."""
    gfns = {}
    if "trained" in methods or "control" in methods:
        gfns["trained"] = gistnet.eval()
    if "untrained" in methods:
        # same architecture and the same centring buffers as the trained net; fresh weights
        with torch.random.fork_rng(devices=[]):  # construction's own draws are discarded
            un = GistNet(gistnet.cfg)
        un.init_weights(torch.Generator().manual_seed(seed))
        un.emb_mean.copy_(gistnet.emb_mean)
        un.emb_dev_rms.copy_(gistnet.emb_dev_rms)
        gfns["untrained"] = un.to(base.device).eval()
    if "mean" in methods:
        gfns["mean"] = mean_pool_gist
    return gfns


def _compare_to_control(row: dict, per_window: dict[str, torch.Tensor]) -> None:
    """Add how much the trained net beats the content-free control to a level's ``row``."""
    row["trained_minus_control"] = row["trained"]["recovered"] - row["control"]["recovered"]
    # the same difference in nats/token, per window: its spread says whether it is noise
    d = per_window["control"] - per_window["trained"]
    n = d.numel()
    row["control_minus_trained_nll"] = {
        "mean": float(d.mean()),
        "se": float(d.std() / n**0.5) if n > 1 else float("nan"),
        "windows_trained_better": int((d > 0).sum()),
        "n_windows": n,
    }


def hardware() -> dict:
    info = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
