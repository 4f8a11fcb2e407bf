"""Meaning keys at table-lookup cost: one fixed vector per vocabulary token, distilled from the
frozen base model, averaged over each 32-token block.

Why: BM25 cannot find a paraphrase ("Who looks after the ferret?" against "X keeps a pet ferret
at home"), and the contextual dense keys of ``mcruntime.dense`` that can cost a partial forward
of the base model per block (~500 tokens/s on 2 CPU cores), too slow to be on by default. Here
the model runs once per *vocabulary entry*, not per stream token: each token id is read alone
(behind the sink token, as dense keys are) through the first ``layer`` decoder layers, and its
hidden state becomes that id's row of a table (``static_table``; 49,152 x 576 for SmolLM2-135M,
~30 s once, then cached under ``$MC_CACHE/keys`` as safetensors with its sha256). A block's key
is the weighted mean of its tokens' rows; a question's key is the same mean over its tokens.
This is the recipe of static distilled embeddings (model2vec): a layer a quarter of the way in
keeps what a word means without the sentence around it, and ingest costs a gather and a mean.

**Weights.** Frequent tokens (articles, punctuation, "the") say little about meaning and would
dominate a plain mean, so a token of probability ``p`` weighs ``a / (a + p)`` (smooth inverse
frequency). ``p`` is a fixed property of the tokenizer, not of any corpus: BPE vocabularies are
built in merge order, so a token's id is close to its frequency rank and ``p`` follows Zipf's
law over ids. Keys therefore never depend on which text a tree happened to hold.

**Centring.** Like the contextual keys: standardised by the per-dimension mean and (median-
floored) standard deviation of pooled 32-token spans of ``dense.NEUTRAL_TEXT``, then unit norm,
so a stored key stays valid forever and two trees of one spec share one key space.

Measured on the dense probe's dev haystacks (``python -m bench.dense_probe``): paraphrase MRR
0.75 (contextual L15 keys: 0.62), questions naming a key word 0.82 (0.65); layers 6, 8, 10 and
12 and weights with ``a`` in 1e-5..1e-4 were compared, and layer 8 of 30 with ``a = 1e-4`` won.
A key is a pure function of its block's 32 tokens: no left context, no windows, so keys
never depend on how the stream was cut into appends.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mcstore.format import BLOCK

_VERSION = 1  # bump when the computation or the id changes: it is part of StaticSpec.id
_TABLE_ROWS = 4096  # vocabulary entries per forward when the table is built


@dataclass(frozen=True)
class StaticSpec:
    """Which table makes the keys. ``layer``: hidden state after this many decoder layers
    (None: ``4 * n_layers // 15``, 8 of SmolLM2's 30); ``a``: the smooth-inverse-frequency
    constant of the token weights."""

    layer: int | None = None
    a: float = 1e-4

    # A key covers one block and needs no left context: the index keys every block as soon
    # as it is complete (``mcruntime.indexing``), bulk ingest needs no overlap (``bulk.plan``).
    context: int = 0
    window: int = BLOCK

    def resolved_layer(self, base) -> int:
        layer = max(1, 4 * base.n_layers // 15) if self.layer is None else int(self.layer)
        if not 0 <= layer <= base.n_layers:
            raise ValueError(f"layer {layer} is outside 0..{base.n_layers} for {base.name}")
        return layer

    def check(self, base, block: int = BLOCK) -> None:
        self.resolved_layer(base)
        if not self.a > 0:
            raise ValueError(f"a must be > 0 (got {self.a})")

    def id(self, base) -> str:
        """``static1.ab12-smollm2-135m-instruct-3f2a9c1b-L8-a0.0001``: keyed by content (the
        model's weights hash and the centring text's hash), like ``DenseSpec.id``."""
        from mcruntime.dense import neutral_text_hash

        return (
            f"static{_VERSION}.{neutral_text_hash()[:4]}-{base.name}-{base.weights_hash()[:8]}"
            f"-L{self.resolved_layer(base)}-a{self.a:g}"
        )

    def keys(self, base, ids, start_context=None, block: int = BLOCK) -> np.ndarray:
        """Keys ``[len(ids) // block, d]`` float32, unit norm (a trailing partial block is
        ignored; ``start_context`` is accepted for the dense keys' interface and unused)."""
        t = _tables(base, self)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        n = len(ids) // block
        if n == 0:
            return np.zeros((0, t.dim), np.float32)
        return centre(t.pool(ids[: n * block].reshape(n, block)), t.mean, t.scale)

    def query(self, base, ids) -> np.ndarray:
        """The key ``[d]`` of a question (token ids)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            raise ValueError("an empty question has no key")
        t = _tables(base, self)
        return centre(t.pool(ids[None])[0], t.mean, t.scale)


def centre(x, mean, scale) -> np.ndarray:
    """``(x - mean) / scale`` at unit L2 norm, as ``dense.centre`` but with the norm summed one
    dimension at a time: numpy's vectorised reductions can round differently with the memory
    alignment of a row, and a key must not depend on where its block sat in a batch."""
    x = (np.asarray(x, np.float32) - mean) / scale
    flat = x.reshape(-1, x.shape[-1])
    sq = np.zeros(flat.shape[0], np.float64)
    for j in range(flat.shape[1]):
        sq += np.square(flat[:, j], dtype=np.float64)
    norm = np.maximum(np.sqrt(sq), 1e-12).astype(np.float32).reshape(x.shape[:-1] + (1,))
    return (x / norm).astype(np.float32)


class _Table:
    """One model's table, token weights and centring statistics for one spec."""

    def __init__(self, rows: np.ndarray, weights: np.ndarray, base):
        self.rows = rows  # [V, d] float16
        self.weights = weights  # [V] float32
        self.dim = rows.shape[1]
        from mcruntime.dense import NEUTRAL_TEXT, block_stats

        neutral = np.asarray(base.tokenizer.encode(NEUTRAL_TEXT), np.int64)
        spans = np.stack([neutral[s : s + BLOCK] for s in range(0, len(neutral) - BLOCK, 8)])
        self.mean, self.scale = block_stats(self.pool(spans))

    def pool(self, blocks: np.ndarray) -> np.ndarray:
        """Weighted mean of the rows of ``blocks [n, k]`` token ids -> ``[n, d]`` float32."""
        ids = np.clip(np.asarray(blocks, np.int64), 0, len(self.weights) - 1)
        # summed one position at a time with elementwise ops: a reduction kernel's order may
        # depend on how many blocks one call holds, and keys must be bit for bit the same
        # whether serial ingest or a bulk worker computed them
        acc = np.zeros((ids.shape[0], self.dim), np.float32)
        wsum = np.zeros((ids.shape[0], 1), np.float32)
        for j in range(ids.shape[1]):
            w = self.weights[ids[:, j]][:, None]
            acc += w * self.rows[ids[:, j]].astype(np.float32)
            wsum += w
        return acc / wsum


def zipf_weights(vocab: int, a: float) -> np.ndarray:
    """``a / (a + p)`` with ``p`` Zipf over token ids (id ~ frequency rank in a BPE vocabulary)."""
    inv = 1.0 / (np.arange(vocab, dtype=np.float64) + 1.0)
    p = inv / inv.sum()
    return (a / (a + p)).astype(np.float32)


@torch.no_grad()
def static_table(base, layer: int) -> np.ndarray:
    """Every vocabulary entry's hidden state after ``layer`` decoder layers, read alone behind
    the sink token: ``[vocab, d]`` float16."""
    from mcruntime.dense import run_layers, sink_id

    V, sink = base.vocab_size, sink_id(base)
    out = np.zeros((V, base.d_model), np.float16)
    for s in range(0, V, _TABLE_ROWS):
        v = torch.arange(s, min(V, s + _TABLE_ROWS))
        rows = torch.stack([torch.full_like(v, sink), v], 1)
        out[s : s + len(v)] = run_layers(base, rows, [layer])[layer][:, 1].cpu().numpy()
    return out


# base -> {spec: _Table}; the lock makes one thread build a table while others wait for it
_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _tables(base, spec: StaticSpec) -> _Table:
    with _LOCK:
        per = _TABLES.setdefault(base, {})
        if spec not in per:
            spec.check(base)
            rows = load_or_build(base, spec)
            per[spec] = _Table(rows, zipf_weights(base.vocab_size, spec.a), base)
        return per[spec]


def table_path(base, spec: StaticSpec) -> Path:
    """Where the table of ``spec``'s layer is cached (the weights ``a`` do not change it)."""
    from mcmodels.base import cache_root

    name = spec.id(base).rsplit("-a", 1)[0]
    return cache_root() / "keys" / f"{name}.safetensors"


def load_or_build(base, spec: StaticSpec) -> np.ndarray:
    """The table from the cache when its sha256 (in its metadata) checks, else built and
    written there atomically (a cache that cannot be written only costs a rebuild next time)."""
    from safetensors import safe_open
    from safetensors.numpy import save

    path = table_path(base, spec)
    try:
        with safe_open(str(path), "np") as f:
            want = (f.metadata() or {}).get("sha256")
            rows = f.get_tensor("rows")
        if want == hashlib.sha256(rows.tobytes()).hexdigest() and rows.shape == (
            base.vocab_size,
            base.d_model,
        ):
            return rows
    except Exception:  # missing, unreadable or damaged (any safetensors error): build again
        pass
    rows = static_table(base, spec.resolved_layer(base))
    blob = save({"rows": rows}, metadata={"sha256": hashlib.sha256(rows.tobytes()).hexdigest()})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        pass
    return rows


def spec_from_id(key_id: str | None):
    """The spec whose keys a tree records under ``key_id`` (its binding's ``retrieval.dense``),
    so a tree keeps the kind of meaning keys it was built with; None: the default for new trees
    (:class:`StaticSpec`). The contextual keys of ``mcruntime.dense`` are named ``dense…``."""
    import re

    if not key_id:
        return StaticSpec()
    m = re.search(r"-L(\d+)-a([0-9.e+-]+)$", key_id)
    if key_id.startswith("static") and m:
        return StaticSpec(layer=int(m.group(1)), a=float(m.group(2)))
    m = re.search(r"-L(\d+)-c(\d+)-w(\d+)-(\w+)$", key_id)
    if key_id.startswith("dense") and m:
        from mcruntime.dense import DenseSpec

        return DenseSpec(
            layer=int(m.group(1)), context=int(m.group(2)), window=int(m.group(3)), pool=m.group(4)
        )
    raise ValueError(f"unknown kind of meaning keys {key_id!r}")


def main(argv: list[str] | None = None) -> int:
    """``python -m mcruntime.static_keys [MODEL]``: build (or check) the table of the default
    spec for a model into the cache, so the first ingest does not wait for it (``./install``)."""
    import sys
    import time

    import mcmodels

    args = sys.argv[1:] if argv is None else argv
    base = mcmodels.load_base(args[0] if args else mcmodels.DEFAULT_MODEL)
    spec = StaticSpec()
    t0 = time.perf_counter()
    load_or_build(base, spec)
    print(f"meaning-key table {table_path(base, spec)} ready ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
