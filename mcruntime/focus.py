"""The focus allocator: turns signed per-entry scores into a few budget-neutral edits.

Scores come from a scorer (LensNet or a non-learned baseline): > 0 means the entry wants more
detail, < 0 that it can give detail up. Each refocus step:

* expands the best-scoring entries (score above ``tau_expand``, level >= 1, not cooling down);
* pays for every expand that does not fit in the free budget by collapsing the sibling group
  with the lowest mean score, but only when that group is worth less than the expand
  (``margin``): an expand is never bought with something more valuable;
* never touches the raw region (newest ``raw_recent`` tokens and the incomplete block) and never
  drops history: the context always tiles the whole timeline;
* a node just collapsed may not be expanded again (and vice versa) for ``cooldown`` steps, so
  entries do not thrash.

It also keeps the budget when the timeline grows (``grow``): new raw tokens push the context over
``budget`` and the cheapest groups are collapsed until it fits again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mcruntime.context import ContextError, Entry, NodeCount, WorkingContext
from mcstore.format import BLOCK

Scores = np.ndarray
ScoreFn = Callable[[WorkingContext], Scores]


RAW_RECENT = 128  # newest tokens of the history that always stay raw (the default)


def raw_recent_for(budget: int, raw_recent: int = RAW_RECENT) -> int:
    """The raw tail a budget affords: ``raw_recent``, but at most a quarter of the budget (a
    small window keeps room for gists of the past)."""
    return min(raw_recent, max(0, budget // 4))


@dataclass
class FocusConfig:
    budget: int = 2048
    raw_recent: int = RAW_RECENT
    tau_expand: float = 0.0
    margin: float = 0.05
    # a collapse before the first changed position makes the KV cache recompute from there:
    # among groups cheap enough to give up, one that is a whole window earlier counts this
    # much more expensive
    recompute_weight: float = 0.5
    max_expands: int = 4
    cooldown: int = 2


@dataclass
class FocusStats:
    """Telemetry of the allocator: how much it swaps, and how long detail stays resident."""

    steps: int = 0
    expands: int = 0
    collapses: int = 0
    forced_collapses: int = 0
    residency_steps: list[int] = field(default_factory=list)

    @property
    def swap_rate(self) -> float:
        return (self.expands + self.collapses) / self.steps if self.steps else 0.0

    @property
    def mean_residency(self) -> float:
        return float(np.mean(self.residency_steps)) if self.residency_steps else 0.0

    def as_dict(self) -> dict:
        return {
            "steps": self.steps,
            "expands": self.expands,
            "collapses": self.collapses,
            "forced_collapses": self.forced_collapses,
            "swap_rate": self.swap_rate,
            "mean_residency_steps": self.mean_residency,
        }


@dataclass
class Edits:
    """What one allocator call did, in order: ("expand", node) or ("collapse", parent)."""

    ops: list[tuple[str, Entry]] = field(default_factory=list)

    @property
    def expanded(self) -> list[Entry]:
        return [e for op, e in self.ops if op == "expand"]

    @property
    def collapsed(self) -> list[Entry]:
        return [e for op, e in self.ops if op == "collapse"]

    def __bool__(self) -> bool:
        return bool(self.ops)


class Focus:
    """A working context together with the rules that keep it legal and useful."""

    def __init__(self, wc: WorkingContext, num_nodes: NodeCount, config: FocusConfig):
        self.wc = wc
        self.num_nodes = num_nodes
        self.config = config
        self.stats = FocusStats()
        self._last_edit: dict[Entry, int] = {}
        self._expanded_at: dict[Entry, int] = {}

    # -- assembly -----------------------------------------------------------------------------

    @classmethod
    def assemble(
        cls,
        length: int,
        num_nodes: NodeCount,
        config: FocusConfig,
        *,
        priority: ScoreFn | None = None,
        rounds: int = 64,
        block: int = BLOCK,
    ) -> Focus:
        """Coarsest covering, then expansion by priority until the budget is reached.

        ``priority`` scores entries like a scorer; by default newer entries come first (a fovea
        at the end of the timeline with detail falling off into the past).
        """
        raw_from = (max(0, length - config.raw_recent) // block) * block
        wc = WorkingContext.canonical(length, num_nodes, raw_from=raw_from, block=block)
        focus = cls(wc, num_nodes, config)
        if wc.cost > config.budget:
            raise ContextError(
                f"the window of {config.budget} cannot hold even the coarsest view "
                f"({wc.cost} entries) of {length} tokens; use a larger window"
            )
        priority = priority or recency_priority
        for _ in range(rounds):
            free = config.budget - wc.cost
            if free < block - 1:
                break
            scores = priority(wc)
            order = [p for p in np.argsort(-scores, kind="stable") if wc.entries[p][0] > 0]
            if not order:
                break
            chosen = [wc.entries[p] for p in order[: max(1, free // (block - 1))]]
            for entry in chosen:
                if config.budget - wc.cost < block - 1:
                    break
                pos = wc.position_of(entry)
                if pos is not None:
                    wc.expand(pos)
        return focus

    # -- growth -------------------------------------------------------------------------------

    def grow(self, n: int, scores: Scores | None = None) -> Edits:
        """Add ``n`` raw tokens at the end, then collapse the cheapest groups to fit the budget.

        ``scores`` (one per entry before growing) rank what to give up; without them the oldest
        groups go first.
        """
        score_of = None if scores is None else dict(zip(self.wc.entries, scores, strict=True))
        self.wc.extend(n)
        return self.make_room(score_of)

    def make_room(self, score_of: dict[Entry, float] | None = None) -> Edits:
        edits = Edits()
        while self.wc.cost > self.config.budget:
            groups = self._collapsible(score_of, respect_cooldown=False)
            if not groups:
                raise ContextError(
                    f"the window of {self.config.budget} cannot hold {self.wc.length} tokens "
                    f"(cost {self.wc.cost}, nothing left to collapse); use a larger window"
                )
            gscore, pos, parent = groups[0]
            self._collapse(pos, parent, edits)
            if score_of is not None:
                score_of[parent] = gscore
            self.stats.forced_collapses += 1
        return edits

    def rebudget(self, budget: int, raw_recent: int) -> Edits:
        """Work to a new budget and raw tail from now on (a new ``FocusConfig``: the caller's
        is never changed), collapsing the cheapest groups until the context fits."""
        self.config = dataclasses.replace(self.config, budget=budget, raw_recent=raw_recent)
        return self.make_room()

    def on_commit(self, num_nodes: NodeCount) -> None:
        """The store committed more nodes: collapses may now reach further."""
        self.num_nodes = num_nodes

    # -- refocus ------------------------------------------------------------------------------

    def refocus(self, scores: Scores, *, tau_expand: float | None = None) -> Edits:
        """One refocus step from signed scores (one per entry, in entry order).

        ``tau_expand`` overrides the config's threshold for this step (decoding uses a higher
        one: a refocus there costs a KV recompute, so only strong wants are worth it)."""
        wc, cfg, b = self.wc, self.config, self.wc.block
        tau = cfg.tau_expand if tau_expand is None else tau_expand
        if len(scores) != wc.cost:
            raise ValueError(f"{len(scores)} scores for {wc.cost} entries")
        self.stats.steps += 1
        step = self.stats.steps
        edits = Edits()
        score_of = dict(zip(wc.entries, np.asarray(scores, dtype=np.float64).tolist(), strict=True))
        candidates = [
            (s, e) for e, s in score_of.items() if e[0] > 0 and s > tau and not self._cooling(e)
        ]
        candidates.sort(key=lambda c: -c[0])
        for s, entry in candidates[: cfg.max_expands]:
            while cfg.budget - wc.cost < b - 1 and wc.position_of(entry) is not None:
                # pay with a group worth less than the expand (never the one holding it),
                # preferring those that do not move the KV recompute earlier
                groups = [
                    g
                    for g in self._collapsible(score_of)
                    if not _contains(g[2], entry, b) and g[0] < s - cfg.margin
                ]
                if not groups:
                    break
                first = min(
                    wc.position_of(entry), wc.dirty_from if wc.dirty_from is not None else wc.cost
                )
                gscore, pos, parent = min(
                    groups,
                    key=lambda g: g[0] + cfg.recompute_weight * max(0, first - g[1]) / wc.cost,
                )
                self._collapse(pos, parent, edits)
                score_of[parent] = gscore
            if cfg.budget - wc.cost < b - 1:
                break
            pos = wc.position_of(entry)
            if pos is None:  # swallowed by a collapse above
                continue
            wc.expand(pos)
            for k in range(b):
                score_of[(entry[0] - 1, entry[1] * b + k)] = s
            self._last_edit[entry] = step
            self._expanded_at[entry] = step
            self.stats.expands += 1
            edits.ops.append(("expand", entry))
        return edits

    # -- helpers ------------------------------------------------------------------------------

    def _cooling(self, node: Entry) -> bool:
        return self.stats.steps - self._last_edit.get(node, -(10**9)) <= self.config.cooldown

    def _collapsible(self, score_of: dict[Entry, float] | None, *, respect_cooldown: bool = True):
        """Sibling groups that may be collapsed, cheapest first: (score, first pos, parent)."""
        wc, b = self.wc, self.wc.block
        raw_from = wc.raw_floor(self.config.raw_recent)
        entries = wc.entries
        out = []
        for pos, parent in wc.sibling_groups():
            level, index = parent
            if (index + 1) * b**level > raw_from or index >= self.num_nodes(level):
                continue
            if respect_cooldown and self._cooling(parent):
                continue
            if score_of is None:
                g = float(index * b**level)  # oldest first
            else:
                g = sum(score_of.get(e, 0.0) for e in entries[pos : pos + b]) / b
            out.append((g, pos, parent))
        out.sort(key=lambda x: (x[0], x[1]))
        return out

    def _collapse(self, pos: int, parent: Entry, edits: Edits) -> None:
        self.wc.collapse(pos, self.num_nodes)
        self._last_edit[parent] = self.stats.steps
        if parent in self._expanded_at:
            self.stats.residency_steps.append(self.stats.steps - self._expanded_at.pop(parent))
        self.stats.collapses += 1
        edits.ops.append(("collapse", parent))


def _contains(parent: Entry, entry: Entry, block: int) -> bool:
    """Whether ``entry`` lies inside the span of ``parent``."""
    (pl, pi), (el, ei) = parent, entry
    if el >= pl:
        return False
    return ei // block ** (pl - el) == pi


def recency_priority(wc: WorkingContext) -> Scores:
    """Newer entries first: the default assembly order, and the recency baseline's shape."""
    starts = np.asarray(wc.starts(), dtype=np.float64)
    return starts / max(1, wc.length)
