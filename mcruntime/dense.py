"""Dense retrieval keys from the frozen base model itself: no trained network.

A block key is the mean of one middle layer's hidden states over a 32-token block of the stream;
a query key is the same layer's pooled state over the question. They are meant for questions that
share no word with the text that answers them (paraphrases), fused by the caller with BM25
(reciprocal-rank fusion) and searched with an inner-product index (faiss ``IndexFlatIP``)::

    spec = DenseSpec()                                  # layer n_layers // 2, 128 context, 512 window
    keys = block_keys(base, ids, spec)                  # [len(ids) // 32, d] float32, unit norm
    more = block_keys(base, ids2, spec, start_context=ids[-spec.context:])   # incremental ingest
    q = query_key(base, base.tokenizer.encode("Who looks after frobnicator?"), spec)   # [d]
    scores = keys @ q
    binding["dense"] = spec.id(base)                    # which keys a tree holds

**How the states are computed.** Only the first ``layer`` decoder layers run (this module calls
them itself, with the model's own rotary embedding; the rest of the network, the final norm and
the LM head are never touched). The stream is cut into windows of ``window`` tokens; each forward
row is ``[sink] + context + window``: ``context`` is up to ``spec.context`` tokens that precede
the window in the stream (``start_context`` supplies those before ``ids[0]``), and ``sink`` is the
tokenizer's document separator at position 0. Llama-style models put a massive activation (norm
~100× the others in SmolLM2's middle layers) on whatever token sits at position 0; with a fixed
sink there, no stream token ever gets it, and keys do not depend on which block happened to start
a forward. Positions restart at 0 for every row. Rows are right-padded and batched: attention is
causal, so padding never reaches a real token.

**Centring.** Raw pooled states of any two blocks have cosine ~0.9 (median 0.89 at SmolLM2's
layer 15): one common direction dominates, and a few residual-stream dimensions carry 10-20x the
variance of the rest. Keys are therefore standardised by statistics that are a *fixed property of
the model and the spec*: the per-dimension mean and standard deviation (floored at its median, so
quiet dimensions are not amplified) of pooled 32-token spans of :data:`NEUTRAL_TEXT`, a built-in
~1.2k-token mix of prose, dialogue, email, code, SQL, config, logs and tables
(:func:`neutral_stats`), then L2-normalised (:func:`centre`). Fixed statistics, rather than a
running mean of the tree's own blocks, keep every stored key valid forever: keys written today
and next year are centred alike, an index never needs rebuilding, and two trees of one spec share
one key space. On the probe (``bench/results/dense_probe.md``, layer 15) the fixed statistics do
better than the haystack's own (MRR 0.64 vs 0.55), and the per-dimension scale matters (0.45 with
the mean alone, 0.47 with no centring at all).

**Queries.** A question is read like a block: after the sink and ``spec.context`` tokens of left
context (the last tokens of :data:`NEUTRAL_TEXT`), through the same layers, pooled over the
question's own tokens, standardised by the same statistics. Without that context the question's
states are unlike any block's (every block is read after context), and the probe's MRR drops from
0.64 to 0.42. Wrapping the question (``QUERY_FORMS``: "Question: ... Answer:", a lead-in
sentence) made it worse, so the default form is the bare question.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from mcstore.format import BLOCK

_VERSION = 2  # bump when the computation or the id changes: it is part of DenseSpec.id

POOLS = ("mean", "rms")

# How a question is wrapped before pooling (``{q}`` is the question). "raw" won on the probe's
# dev text (bench/results/dense_probe.md); the others are kept for comparison.
QUERY_FORMS = {
    "raw": "{q}",
    "qa": "Question: {q}\nAnswer:",
    "note": "Here is the relevant note. {q}",
}
DEFAULT_QUERY_FORM = "raw"

NEUTRAL_TEXT = """\
The museum opens at nine in the morning and closes at six, except on public holidays. Visitors
are asked to leave large bags at the cloakroom near the main entrance. Guided tours start every
hour from the central hall and last about forty minutes.

- Did you remember to water the plants before we left?
- I did, and I asked the neighbour to check on them on Thursday.
- Good. The train is at ten past four, so we should leave by half past three.

def moving_average(values, width):
    \"\"\"Return the running mean of ``values`` over ``width`` items.\"\"\"
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out

2023-03-14 08:12:44 INFO  worker-3 started job 5512 (queue=default)
2023-03-14 08:12:47 WARN  worker-3 retrying request after timeout (attempt 2 of 5)
2023-03-14 08:12:51 INFO  worker-3 finished job 5512 in 7.2s

In the autumn the river rises after the rains, and the low fields near the mill are often
flooded for a week or two. Farmers in the valley plant their winter crops late for this reason,
and most of the old houses stand on a ledge of rock above the water line.

Usage: convert [OPTIONS] INPUT OUTPUT
  -f, --format FORMAT   output format (png, jpeg or webp)
  -q, --quality N       compression quality from 1 to 100 (default 85)
  -v, --verbose         print every file as it is written

The committee met on Tuesday to review the budget for next year. After a long discussion the
members agreed to postpone the purchase of new equipment and to spend the money on repairs to
the roof instead. The minutes will be circulated by the end of the week.

struct point { double x, y; };

static double dist(struct point a, struct point b)
{
    double dx = a.x - b.x, dy = a.y - b.y;
    return sqrt(dx * dx + dy * dy);
}

To install the package, download the archive, unpack it into a folder of your choice and run the
setup script. If you see an error about missing permissions, run it again as an administrator.
Questions about the licence should be sent to the address printed on the first page.

Hi Sam,

Thanks for sending the draft so quickly. I have read it twice and I think the second section
could be shorter; the examples say the same thing as the text around them. Can we talk about it
on Monday? I am free after lunch.

Best,
Jo

Ingredients: two cups of flour, one egg, a pinch of salt and a cup of warm milk. Mix the dry
ingredients first, then add the egg and the milk slowly while stirring. Let the batter rest for
ten minutes before cooking it in a hot pan with a little butter.

SELECT customer_id, COUNT(*) AS orders
FROM orders
WHERE created_at >= '2022-01-01'
GROUP BY customer_id
ORDER BY orders DESC
LIMIT 20;

## Changes in version 2.4

* The default timeout is now thirty seconds.
* Fixed a crash when the input file was empty.
* The old command-line flags still work but print a warning.

Let f be a continuous function on the closed interval [a, b]. Then f attains a maximum and a
minimum on that interval, and every value between f(a) and f(b) is taken at least once. Both
facts fail on open intervals, as the function 1/x on (0, 1) shows.

[server]
host = 0.0.0.0
port = 8080
workers = 4

[logging]
level = info
file = /var/log/app.log

The match was delayed by half an hour because of the rain. When it finally started, the home
side scored twice in the first ten minutes, and the visitors never recovered; the final score
was three to nothing.

She stopped at the corner, looked back once at the lighted window, and then walked on quickly
through the rain. Nobody in the house had noticed that she was gone, and by the time they did,
the last bus had already left the square.

| name    | size | modified   |
|---------|------|------------|
| a.txt   | 12K  | 2021-06-02 |
| notes   | 4.0K | 2022-11-19 |

Each chapter ends with a short list of exercises. Readers who want to check their answers will
find worked solutions in the appendix, together with hints for the harder problems and a few
suggestions for further reading.
"""


@dataclass
class DenseSpec:
    """Which pooled hidden states make the dense keys.

    ``layer``: hidden state after this many decoder layers (None: ``n_layers // 2``, the best of
    n/3, n/2, 2n/3 on the probe; 0 is the input embeddings, ``n_layers`` the last layer's output
    before the final norm). ``context``: tokens of left context each forward row carries before its
    window. ``window``: stream tokens per forward row (a multiple of the block size). ``pool``:
    ``"mean"`` (mean of the raw states) or ``"rms"`` (mean of per-token RMS-normalised states).
    """

    layer: int | None = None
    context: int = 128
    window: int = 512
    pool: str = "mean"

    def resolved_layer(self, base) -> int:
        layer = base.n_layers // 2 if self.layer is None else int(self.layer)
        if not 0 <= layer <= base.n_layers:
            raise ValueError(f"layer {layer} is outside 0..{base.n_layers} for {base.name}")
        return layer

    def check(self, base, block: int = BLOCK) -> None:
        self.resolved_layer(base)
        if self.pool not in POOLS:
            raise ValueError(f"unknown pool {self.pool!r}: use one of {POOLS}")
        if self.context < 0 or self.window <= 0 or self.window % block:
            raise ValueError(
                f"context must be >= 0 and window a positive multiple of {block} "
                f"(got context={self.context}, window={self.window})"
            )
        if 1 + self.context + self.window > base.max_positions:
            raise ValueError(
                f"1 + context + window = {1 + self.context + self.window} exceeds "
                f"{base.name}'s {base.max_positions} positions"
            )

    def id(self, base) -> str:
        """A short stable name of the model and settings, e.g.
        ``dense2.ab12-smollm2-135m-instruct-3f2a9c1b-L15-c128-w512-mean``: keys are kept under
        it, so it is keyed by content: ``3f2a9c1b`` is the hash of the model's weights
        (``BaseLM.weights_hash``; two models of one name get different keys) and ``ab12`` names
        the built-in centring text."""
        return (
            f"dense{_VERSION}.{neutral_text_hash()[:4]}-{base.name}-{base.weights_hash()[:8]}"
            f"-L{self.resolved_layer(base)}-c{self.context}-w{self.window}-{self.pool}"
        )

    def keys(self, base, ids, start_context=None, block: int = BLOCK) -> np.ndarray:
        """:func:`block_keys`, one window per forward row (as ``StaticSpec.keys``: the index
        and bulk ingest call either spec this way)."""
        return block_keys(base, ids, self, block=block, start_context=start_context, batch=1)

    def query(self, base, ids) -> np.ndarray:
        return query_key(base, ids, self)


# ---- the layers ----------------------------------------------------------------------------------


def _causal_mask(n: int, dtype: torch.dtype, device) -> torch.Tensor:
    m = torch.full((n, n), torch.finfo(dtype).min, dtype=dtype, device=device).triu(1)
    return m[None, None]


@torch.no_grad()
def run_layers(base, ids: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
    """Hidden states ``{L: [b, n, d] fp32}`` after each of ``layers`` decoder layers, for right-
    padded rows ``ids [b, n]`` at positions ``0..n-1``. Runs only up to ``max(layers)``."""
    core = base.model.model
    ids = torch.as_tensor(ids, dtype=torch.long, device=base.device)
    b, n = ids.shape
    want = sorted(set(int(x) for x in layers))
    x = base.embed(ids)
    out: dict[int, torch.Tensor] = {}
    if 0 in want:
        out[0] = x.float()
    top = want[-1]
    if top == 0:
        return out
    pos = torch.arange(n, device=base.device)[None].expand(b, -1)
    pe = core.rotary_emb(x, position_ids=pos)
    mask = _causal_mask(n, x.dtype, x.device)  # explicit: right for every attention kind
    for i, layer in enumerate(core.layers[:top]):
        x = layer(
            x,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=None,
            use_cache=False,
            position_embeddings=pe,
        )
        if isinstance(x, tuple):  # older transformers return (hidden, ...)
            x = x[0]
        if i + 1 in want:
            out[i + 1] = x.float()
    return out


def _pool(h: torch.Tensor, pool: str) -> torch.Tensor:
    """``h [..., k, d]`` → ``[..., d]``."""
    if pool == "rms":
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
    return h.mean(-2)


def sink_id(base) -> int:
    tok = base.tokenizer
    sep = getattr(tok, "sep_id", None)
    return int(sep if sep is not None else tok.eos_id)


def _as_ids(x) -> np.ndarray:
    return np.asarray([] if x is None else x, dtype=np.int64).reshape(-1)


def pooled_blocks(
    base,
    ids,
    spec: DenseSpec,
    block: int = BLOCK,
    start_context=None,
    *,
    layers: list[int] | None = None,
    batch: int = 4,
) -> dict[int, np.ndarray]:
    """Raw (uncentred) pooled block states ``{L: [len(ids)//block, d] float32}`` for each of
    ``layers`` (default: the spec's layer); one pass serves them all. A trailing partial block
    is ignored. ``batch``: forward rows per call."""
    want = [spec.resolved_layer(base)] if layers is None else sorted(set(layers))
    res = pooled_layers(base, ids, spec, block, start_context, want, (spec.pool,), batch)
    return {L: res[L, spec.pool] for L in want}


def pooled_layers(
    base, ids, spec: DenseSpec, block, start_context, layers, pools, batch
) -> dict[tuple[int, str], np.ndarray]:
    """``{(layer, pool): [len(ids)//block, d]}``: several layers and pools from one pass."""
    spec.check(base, block)
    ids = _as_ids(ids)
    ctx0 = _as_ids(start_context)[-spec.context :] if spec.context else _as_ids(None)
    nb = len(ids) // block
    res = {(L, p): np.zeros((nb, base.d_model), np.float32) for L in layers for p in pools}
    if nb == 0:
        return res
    full = np.concatenate([ctx0, ids[: nb * block]])
    off = len(ctx0)
    sink = sink_id(base)
    rows: list[tuple[np.ndarray, int, int, int]] = []  # (row ids, first window token, blocks, b0)
    for s in range(0, nb * block, spec.window):
        w = min(spec.window, nb * block - s)
        c0 = max(0, off + s - spec.context)
        row = np.concatenate([[sink], full[c0 : off + s + w]])
        rows.append((row, 1 + off + s - c0, w // block, s // block))
    pad = base.tokenizer.pad_id
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        n = max(len(r[0]) for r in chunk)
        arr = np.full((len(chunk), n), pad, dtype=np.int64)
        for j, (r, *_) in enumerate(chunk):
            arr[j, : len(r)] = r
        hs = run_layers(base, torch.from_numpy(arr), layers)
        for L, h in hs.items():
            for j, (_, first, k, b0) in enumerate(chunk):
                blocks = h[j, first : first + k * block].reshape(k, block, -1)
                for p in pools:
                    res[L, p][b0 : b0 + k] = _pool(blocks, p).cpu().numpy()
    return res


def pooled_query(
    base,
    ids,
    spec: DenseSpec,
    *,
    form: str = DEFAULT_QUERY_FORM,
    context: bool = True,
    layers: list[int] | None = None,
) -> dict[int, np.ndarray]:
    """Raw pooled states ``{L: [d]}`` of a question (token ids) wrapped in ``QUERY_FORMS[form]``.

    Like a block, the question is read after left context: the last ``spec.context`` tokens of
    :data:`NEUTRAL_TEXT` (``context=False``: none), behind the sink. Only the wrapped question's
    tokens are pooled."""
    spec.check(base)
    want = [spec.resolved_layer(base)] if layers is None else sorted(set(layers))
    ids = _as_ids(ids)
    if len(ids) == 0:
        raise ValueError("an empty question has no dense key")
    pre, _, post = QUERY_FORMS[form].partition("{q}")
    enc = base.tokenizer.encode
    wrapped = np.concatenate(
        [_as_ids(enc(pre) if pre else None), ids, _as_ids(enc(post) if post else None)]
    )
    ctx = _neutral_ids(base)[-spec.context :] if context and spec.context else _as_ids(None)
    wrapped = wrapped[-(base.max_positions - 1 - len(ctx)) :]
    row = np.concatenate([[sink_id(base)], ctx, wrapped])
    hs = run_layers(base, torch.from_numpy(row)[None], want)
    return {L: _pool(h[0, 1 + len(ctx) :], spec.pool).cpu().numpy() for L, h in hs.items()}


# ---- centring ------------------------------------------------------------------------------------


def centre(keys: np.ndarray, mean: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """``(keys - mean) / scale``, L2-normalised along the last axis (float32; a zero row stays
    zero). ``scale`` None: 1."""
    x = np.asarray(keys, dtype=np.float32) - np.asarray(mean, dtype=np.float32)
    if scale is not None:
        x = x / np.asarray(scale, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def block_stats(pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, scale)`` of pooled block states ``[n, d]``: scale is the per-dimension standard
    deviation floored at its median, so that the few outlier dimensions of a Llama-style residual
    stream (std 10-20x the median) are shrunk while quiet dimensions are not amplified."""
    pooled = np.asarray(pooled, dtype=np.float64)
    mean = pooled.mean(0)
    std = pooled.std(0)
    scale = np.maximum(std, max(float(np.median(std)), 1e-6))
    return mean.astype(np.float32), scale.astype(np.float32)


# base -> {"ids": neutral ids, (layer, context, pool, block, stride): (mean, scale)}
_STATS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _neutral_ids(base) -> np.ndarray:
    cache = _STATS.setdefault(base, {})
    if "ids" not in cache:
        cache["ids"] = _as_ids(base.tokenizer.encode(NEUTRAL_TEXT))
    return cache["ids"]


def neutral_stats(
    base, spec: DenseSpec, block: int = BLOCK, *, stride: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """The fixed centre of every key of this spec: :func:`block_stats` of :data:`NEUTRAL_TEXT`
    (``[d]`` float32 each). One forward over ``sink + text`` (~1.2k tokens); every ``block``-token
    span at a multiple of ``stride`` after the first ``spec.context`` tokens is pooled (~130
    samples). Cached per model object and spec."""
    spec.check(base, block)
    cache = _STATS.setdefault(base, {})
    key = (spec.resolved_layer(base), spec.context, spec.pool, block, stride)
    if key not in cache:
        ids = _neutral_ids(base)[: base.max_positions - 1]
        layer = spec.resolved_layer(base)
        row = torch.from_numpy(np.concatenate([[sink_id(base)], ids]))[None]
        h = run_layers(base, row, [layer])[layer][0, 1:]
        first = min(spec.context, max(0, len(ids) - block))
        spans = torch.stack([h[s : s + block] for s in range(first, len(ids) - block + 1, stride)])
        cache[key] = block_stats(_pool(spans, spec.pool).cpu().numpy())
    return cache[key]


# ---- the caller-facing keys ----------------------------------------------------------------------


def block_keys(
    base,
    ids,
    spec: DenseSpec | None = None,
    block: int = BLOCK,
    start_context=None,
    *,
    batch: int = 4,
) -> np.ndarray:
    """Dense keys ``[len(ids) // block, d]`` float32 of the stream ``ids``: pooled states,
    standardised by :func:`neutral_stats`, unit L2 norm (inner product = cosine).

    ``start_context``: the tokens just before ``ids[0]`` (its last ``spec.context`` are used).
    Ingesting a stream in parts gives the keys of one call exactly when every part but the last
    is a multiple of ``spec.window`` tokens; otherwise windows start elsewhere and some blocks see
    a different amount (never less than ``spec.context``) of left context."""
    spec = spec or DenseSpec()
    raw = pooled_blocks(base, ids, spec, block, start_context, batch=batch)
    keys = raw[spec.resolved_layer(base)]
    return centre(keys, *neutral_stats(base, spec, block)) if len(keys) else keys


def query_key(
    base, ids, spec: DenseSpec | None = None, *, form: str = DEFAULT_QUERY_FORM
) -> np.ndarray:
    """The dense key ``[d]`` float32 (standardised like the block keys, unit norm) of a question
    given as token ids; compare with :func:`block_keys` by inner product."""
    spec = spec or DenseSpec()
    raw = pooled_query(base, ids, spec, form=form)[spec.resolved_layer(base)]
    return centre(raw, *neutral_stats(base, spec))


def neutral_text_hash() -> str:
    return hashlib.sha256(NEUTRAL_TEXT.encode()).hexdigest()[:8]
