"""The model's view: fixed prefix + working-context vectors + the current turn, with a KV cache.

Positions are sequence positions ``0 … len-1`` (a gist takes one position), so any history fits
the model's trained range. When the working context changes, only positions from the first
changed entry onward are recomputed; decoding a token costs one position against a cache of
at most ``window`` positions, whatever the length of the history.
"""

from __future__ import annotations

import torch

from mcruntime.hooks import NO_HOOKS, Hooks


class Window:
    """Owns the input vectors and the KV cache of one base model.

    ``hooks``: every model step runs inside ``hooks.span("logits")`` (``mcruntime.hooks``)."""

    def __init__(self, base, prefix_ids: list[int], *, hooks: Hooks = NO_HOOKS):
        self.base = base
        self.hooks = hooks
        self.prefix_len = len(prefix_ids)
        # [L, d], fp32, what the cache was computed from
        self.vectors = base.embed(torch.tensor(prefix_ids, dtype=torch.long)).float()
        self.cache = None
        self.cached = 0  # positions held in the cache
        self.recomputed = 0  # telemetry: positions recomputed since creation

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
            if self.cache is not None and self.cached < self.base.cache_length(self.cache):
                self.base.crop_cache(self.cache, self.cached)
            n = self.length
            if self.cached >= n:  # nothing new: recompute the last position for its logits
                self.base.crop_cache(self.cache, n - 1)
                self.cached = n - 1
            todo = self.vectors[self.cached :]
            pos = torch.arange(self.cached, n, device=self.base.device)[None]
            out = self.base.forward(
                todo[None].to(self.base.device, self.base.dtype), pos, cache=self.cache, last_k=1
            )
            self.cache = out.cache
            rec["positions"], rec["len"] = n - self.cached, n
            self.recomputed += n - self.cached
            self.cached = n
            return out.logits[0, -1].float()
