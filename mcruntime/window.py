"""The model's view: fixed prefix + working-context vectors + the current turn, with a KV cache.

Positions are sequence positions ``0 … len-1`` (a gist takes one position), so any history fits
the model's trained range. When the working context changes, what the cache holds before the
first changed entry is kept as it is. After it, with ``shift`` on, runs of positions whose
vectors did not change (the entries after an expand or a collapse, the turn) keep their cached
keys and values, moved to their new positions (``mcmodels.kvcache.KeyShift``); only the changed
entries are computed. With ``shift`` off, everything from the first change on is recomputed.
With ``copy`` on as well, a run of new positions whose vectors repeat a run already computed
earlier in the window (a recalled passage that the focus also expanded in place) takes that
run's keys and values, rotated to where it now stands, instead of being computed again.
Decoding a token costs one position against a cache of at most ``window`` positions, whatever
the length of the history.
"""

from __future__ import annotations

import difflib

import torch

from mcruntime.hooks import NO_HOOKS, Hooks

MIN_RUN = 8  # shorter unchanged runs are computed again: a run costs a model call of its own


def unchanged_runs(old: torch.Tensor, new: torch.Tensor, min_run: int = MIN_RUN):
    """``(old start, new start, length)`` of the runs of rows of ``new`` equal to rows of
    ``old``, in order (as ``difflib`` matches them, longest first), at least ``min_run`` long."""
    a = [hash(r.tobytes()) for r in old.cpu().contiguous().numpy()]
    b = [hash(r.tobytes()) for r in new.cpu().contiguous().numpy()]
    m = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [(i, j, n) for i, j, n in m.get_matching_blocks() if n >= min_run]


def repeated_runs(rows: torch.Tensor, todo: list[int], min_run: int = MIN_RUN):
    """``(source start, target start, length)``: runs of the positions ``todo`` (ascending,
    the last one excluded: its logits are asked for) whose rows repeat, in order, rows at
    earlier positions, at least ``min_run`` long, longest source first where several match.
    Every source lies before the first target, so that computing the window up to there
    first gives every copy its keys and values."""
    if len(todo) < min_run + 1:
        return []
    h = [hash(r.tobytes()) for r in rows.cpu().contiguous().numpy()]
    grams: dict[tuple, list[int]] = {}
    for q in range(len(h) - min_run + 1):
        grams.setdefault(tuple(h[q : q + min_run]), []).append(q)
    wanted = set(todo[:-1])
    out, bound, i = [], None, 0
    while i < len(todo) - 1:
        p = todo[i]
        limit = p if bound is None else bound
        best = (0, 0)
        for q in grams.get(tuple(h[p : p + min_run]), ()):
            if q + min_run > limit:
                break
            k = 0
            while q + k < limit and p + k in wanted and h[q + k] == h[p + k]:
                k += 1
            best = max(best, (k, q))
        if best[0] >= min_run:
            k, q = best
            out.append((q, p, k))
            bound = p if bound is None else bound
            i += k
        else:
            i += 1
    return out


class Window:
    """Owns the input vectors and the KV cache of one base model.

    ``hooks``: every model step runs inside ``hooks.span("logits")`` (``mcruntime.hooks``).
    ``shift``: reuse unchanged positions after an edit, moved (see the module's docstring);
    used only where the model's keys can be moved exactly (``BaseLM.key_shift``). ``copy``:
    with ``shift``, new positions that repeat earlier ones take their keys and values."""

    def __init__(
        self, base, prefix_ids: list[int], *, hooks: Hooks = NO_HOOKS, shift=False, copy=False
    ):
        self.base = base
        self.hooks = hooks
        self.prefix_len = len(prefix_ids)
        # [L, d], fp32, what the cache will be computed from
        self.vectors = base.embed(torch.tensor(prefix_ids, dtype=torch.long)).float()
        self.cache = None
        self.cached = 0  # positions of the cache known to match ``vectors``
        self.computed_from = self.vectors[:0]  # the vectors the cache's positions were made of
        self.recomputed = 0  # telemetry: positions recomputed since creation
        self.shift = base.key_shift() if shift else None
        self.copy = copy

    @property
    def length(self) -> int:
        return self.vectors.shape[0]

    def set_from(self, start: int, vectors: torch.Tensor) -> None:
        """Replace everything from sequence position ``start`` on by ``vectors``."""
        start = max(start, self.prefix_len)
        self.vectors = torch.cat([self.vectors[:start], vectors.float()], dim=0)
        self.cached = min(self.cached, start)

    def append(self, vectors: torch.Tensor) -> None:
        self.vectors = torch.cat([self.vectors, vectors.float()], dim=0)

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        """Logits of the last position, computing only what the cache lacks."""
        with self.hooks.span("logits") as rec:
            n = self.length
            runs = self._reusable(n)
            if self.cache is not None and self.cached < self.base.cache_length(self.cache):
                self.base.crop_cache(self.cache, self.cached)
            if self.cached >= n:  # nothing new: recompute the last position for its logits
                self.base.crop_cache(self.cache, n - 1)
                self.cached = n - 1
            start, before = self.cached, 0
            copies = self._copies(runs, n)
            if copies:  # compute up to the first copy, then copy and go on
                first = copies[0][1]
                before = self._upto(first, [r for r in runs if r[0] < first])
                runs = [r for r in runs if r[0] >= first]
                if self.cache.splices():
                    runs += [(at, self.cache.take(src, src + size), size, at - src)
                             for src, at, size in copies]  # fmt: skip
                else:
                    copies = []
            rec["copied"] = sum(size for _, _, size in copies)
            if runs:
                out, computed = self._around(runs, n)
            else:
                computed, out = n - self.cached, self._forward(self.cached, n, last_k=1)
            computed += before
            rec["positions"], rec["len"] = computed, n
            rec["reused"] = n - start - computed
            self.recomputed += computed
            self.cached = n
            self.computed_from = self.vectors
            return out.logits[0, -1].float()

    def _reusable(self, n: int) -> list:
        """The cache's unchanged runs after ``cached``, taken out of it before it is cut:
        ``(new start, keys and values, length, shift)``. The last position is never reused
        (its logits are what is asked for)."""
        if self.shift is None or self.cache is None or not self.cache.splices():
            return []
        have = self.base.cache_length(self.cache)
        if self.cached >= have:
            return []
        s = self.cached
        out = []
        for i, j, size in unchanged_runs(self.computed_from[s:have], self.vectors[s : n - 1]):
            out.append((s + j, self.cache.take(s + i, s + i + size), size, j - i))
        return out

    def _copies(self, runs: list, n: int) -> list:
        """``repeated_runs`` of the positions still to compute (after ``cached``, not in a
        moved run); none without ``copy`` or with a cache that cannot be spliced."""
        if not self.copy or self.shift is None:
            return []
        if self.cache is not None and not self.cache.splices():
            return []
        moved = {p for at, _, size, _ in runs for p in range(at, at + size)}
        todo = [p for p in range(self.cached, n) if p not in moved]
        return repeated_runs(self.vectors[:n], todo)

    def _upto(self, stop: int, runs: list) -> int:
        """Make the cache hold every position before ``stop`` (``runs`` moved back, the rest
        computed). -> positions computed."""
        if runs or self.cache is not None:
            return self._around(runs, stop)[1]
        computed = stop - self.cached
        self._forward(self.cached, stop, last_k=1)
        self.cached = stop
        return computed

    def _around(self, runs: list, n: int):
        """Put the ``runs`` back (moved or copied), then compute every other position from
        ``cached`` to ``n`` in ONE model call (a call per changed region read every weight
        k + 1 times for k edits; measured, the saving is small: the refocus step of ``bench
        speed`` went 0.36 -> 0.33 s, most of it ~3.5 ms per position). The call's mask lets
        each computed position see what precedes it in the sequence (the kept prefix, moved
        runs, computed positions), whatever order the cache holds them in; the cache is then
        put in sequence order.
        -> (the call's output, positions computed)."""
        start = self.cached
        slots = []  # sequence position of each cache slot after ``start``, in cache order
        for new_at, kv, size, delta in runs:
            self.cache.put(kv, lambda k, d=delta: self.shift(k, d))
            slots.extend(range(new_at, new_at + size))
        moved = set(slots)
        # ends with n - 1 when n is the window's length (never reused); empty when what comes
        # before a copy was all moved
        todo = [p for p in range(start, n) if p not in moved]
        seq = torch.tensor(list(range(start)) + slots + todo, device=self.base.device)
        if not todo:  # everything up to ``n`` was moved or copied: no model call
            self.cache.reorder_from(start, torch.argsort(seq[start:]) + start)
            self.cached = n
            return None, 0
        at = torch.tensor(todo, device=self.base.device)
        mask = (seq[None, :] <= at[:, None])[None, None]  # [1, 1, computed, cache after]
        out = self.base.forward(
            self.vectors[todo][None].to(self.base.device, self.base.dtype),
            at[None],
            cache=self.cache,
            last_k=1,
            attention_mask=mask,
        )
        self.cache.reorder_from(start, torch.argsort(seq[start:]) + start)
        self.cached = n
        return out, len(todo)

    def _forward(self, start: int, stop: int, last_k: int):
        pos = torch.arange(start, stop, device=self.base.device)[None]
        todo = self.vectors[start:stop]
        out = self.base.forward(
            todo[None].to(self.base.device, self.base.dtype), pos, cache=self.cache, last_k=last_k
        )
        self.cache = out.cache
        return out
