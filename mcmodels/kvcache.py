"""A KV cache that grows in place instead of copying itself at every step.

transformers' ``DynamicCache`` appends a step's keys and values with ``torch.cat``, which
copies the whole cache: at 1,500 cached positions that copy was 42% of a decode step of the
135M model on one CPU thread (profiled: ~20 ms of ~48 ms). :class:`GrowingCache` keeps each
layer's keys and values in a buffer with room to spare (the room doubles when it runs out, so
copies are amortised to O(1) per position) and hands attention a view of the filled part.
Cropping, which a refocus does, only shortens the view.

A refocus that edits an early entry leaves the entries after it unchanged but at other positions.
:class:`KeyShift` moves their cached keys to the new positions (RoPE rotations compose, so a key
rotated for position p and then by d is exactly the key for p + d), and
:meth:`GrowingCache.take` / :meth:`GrowingCache.put` splice them back in after the edit, so only
the edited entries are computed again. What the moved positions attended to is still the old
content: exact in the first layer, an approximation above it (measured in docs/memory.md).

A view handed out by one step stays valid until a later step writes over its positions: after
a crop, the next update reuses the cropped positions. Nothing in this project keeps a step's
keys past the next step (the window holds the cache object, never its tensors).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

MIN_ROOM = 256  # positions a layer's first buffer holds at least


class GrowingLayer(DynamicLayer):
    """A full-attention layer's keys and values in a buffer that grows by doubling."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.length = 0
        self.kbuf = self.vbuf = None

    def _room(self, need: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        have = 0 if self.kbuf is None else self.kbuf.shape[-2]
        if need <= have:
            return
        cap = max(need, 2 * have, MIN_ROOM)
        kbuf = key_states.new_empty((*key_states.shape[:-2], cap, key_states.shape[-1]))
        vbuf = value_states.new_empty((*value_states.shape[:-2], cap, value_states.shape[-1]))
        if self.length:
            kbuf[..., : self.length, :] = self.kbuf[..., : self.length, :]
            vbuf[..., : self.length, :] = self.vbuf[..., : self.length, :]
        self.kbuf, self.vbuf = kbuf, vbuf

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = self.length + key_states.shape[-2]
        self._room(n, key_states, value_states)
        self.kbuf[..., self.length : n, :] = key_states
        self.vbuf[..., self.length : n, :] = value_states
        self.length = n
        self.keys, self.values = self.kbuf[..., :n, :], self.vbuf[..., :n, :]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative count of positions to remove")
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        self.length = max(0, self.length + tokens_to_remove)
        self.keys = self.kbuf[..., : self.length, :]
        self.values = self.vbuf[..., : self.length, :]

    def reset(self) -> None:
        super().reset()
        self.length = 0
        self.kbuf = self.vbuf = None

    # the batch reshuffles of beam search and batched generation act on the buffers, so that
    # the next update writes where the views point (transformers' versions reassign the views
    # only); offloading (``offload``/``prefetch``) is not supported: nothing here offloads
    def _rebuffer(self, fn) -> None:
        if self.get_seq_length() > 0:
            self.kbuf, self.vbuf = fn(self.kbuf), fn(self.vbuf)
            self.keys = self.kbuf[..., : self.length, :]
            self.values = self.vbuf[..., : self.length, :]

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._rebuffer(lambda b: b.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._rebuffer(lambda b: b[indices, ...])

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._rebuffer(lambda b: b.index_select(0, beam_idx.to(b.device)))


class GrowingCache(DynamicCache):
    """``DynamicCache`` whose plain full-attention layers are :class:`GrowingLayer` (sliding
    window or other special layers, which a model's config may ask for, are left as they
    are: they already bound their own size)."""

    def __init__(self, config=None):
        super().__init__(config=config)
        self.layers = [GrowingLayer() if type(la) is DynamicLayer else la for la in self.layers]
        if getattr(self, "layer_class_to_replicate", None) is DynamicLayer:
            self.layer_class_to_replicate = GrowingLayer

    def splices(self) -> bool:
        """Every layer is a :class:`GrowingLayer` (positions can be taken out and put back)."""
        return all(isinstance(la, GrowingLayer) for la in self.layers)

    def take(self, start: int, stop: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Copies of every layer's keys and values of positions ``[start, stop)`` (copies: a
        later write into the buffer must not change them)."""
        return [(la.keys[..., start:stop, :].clone(), la.values[..., start:stop, :].clone())
                for la in self.layers]  # fmt: skip

    def reorder_from(self, start: int, order: torch.Tensor) -> None:
        """Rearrange every layer's positions from ``start`` on: position ``start + i`` takes
        what position ``order[i]`` held (a permutation of ``start .. length - 1``)."""
        for la in self.layers:
            idx = order.to(la.kbuf.device)
            la.kbuf[..., start : la.length, :] = la.kbuf[..., idx, :]  # the gather copies first
            la.vbuf[..., start : la.length, :] = la.vbuf[..., idx, :]
            la.keys, la.values = la.kbuf[..., : la.length, :], la.vbuf[..., : la.length, :]

    def put(
        self, kv: list[tuple[torch.Tensor, torch.Tensor]], shift: Callable | None = None
    ) -> None:
        """Append ``kv`` (from :meth:`take`) to every layer, keys passed through ``shift``."""
        for la, (k, v) in zip(self.layers, kv, strict=True):
            la.update(shift(k) if shift is not None else k, v)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class KeyShift:
    """Rotates cached keys ``[..., n, head_dim]`` by ``delta`` positions, for a model whose
    attention applies a plain rotary embedding (Llama's, Qwen2's): a rotation by an angle
    proportional to the position, so shifts compose exactly. :meth:`of` says None for a model
    where they would not (scaled or length-dependent RoPE, another position encoding)."""

    SHIFTABLE = ("default", "linear", "llama3")  # frequencies fixed once: pure rotations

    def __init__(self, rotary):
        self.rotary = rotary

    @classmethod
    def of(cls, model) -> KeyShift | None:
        rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
        if rotary is None or getattr(rotary, "rope_type", None) not in cls.SHIFTABLE:
            return None
        if float(getattr(rotary, "attention_scaling", 1.0)) != 1.0:
            return None
        return cls(rotary)

    def __call__(self, keys: torch.Tensor, delta: int) -> torch.Tensor:
        if delta == 0:
            return keys
        pos = torch.tensor([[delta]], dtype=torch.long, device=keys.device)
        cos, sin = self.rotary(keys.float(), pos)  # [1, 1, head_dim]
        k = keys.float()
        return (k * cos[:, None] + rotate_half(k) * sin[:, None]).to(keys.dtype)
