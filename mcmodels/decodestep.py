"""One decode step of a Llama-shaped model, without the framework around it.

A decode step computes a single position. On a CPU its arithmetic is small; what it costs is
reading the weights (the 135M model's projections: ~270 MB in fp16) and, in transformers'
general forward, everything around the arithmetic: per layer a mask, a rotary table, three
projections where one would do, a fused flash-attention kernel that is slow for one query, and
casts. Profiled at one thread over 1,500 cached positions: the matrix products were 25 ms of a
57 ms step, attention 12 ms (0.4 ms a layer), the rest small operations and Python.

:class:`DecodeStep` computes the same function with as few operations as the model allows:
the query, key and value projections as one product and the gate and up projections as one
(the original modules' weights become views of the joined matrix, so no memory is added),
attention as two small products over the cached keys with the query heads grouped onto their
shared key heads (no copy of the cache), RMS norms and the rotary embedding written out. It
appends to the same :class:`mcmodels.kvcache.GrowingCache` the general forward fills, so a
prefill in transformers and decode steps here share one cache. It is built only for a model
whose computation it reproduces (:meth:`DecodeStep.of`); anything else keeps the general
forward. ``tests/models/test_decodestep.py`` checks that both give the same logits and cache.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mcmodels.halfweights import HalfLinear

_LLAMA_SHAPED = ("llama", "qwen2", "mistral")  # pre-norm, RoPE, GQA, SwiGLU: the same step


class _Joined:
    """Several projections of one input as one matrix product.

    fp16 projections (:class:`HalfLinear`) are joined into one fp16 matrix and each original
    weight becomes a view into it; other projections are called one by one (joining fp32
    weights would add their bytes to memory)."""

    def __init__(self, linears: list[torch.nn.Module]):
        self.sizes = [_out_features(lin) for lin in linears]
        self.parts = linears
        self.weight = None
        self.bias = None
        if all(isinstance(lin, HalfLinear) for lin in linears):
            joined = torch.cat([lin.weight16 for lin in linears], dim=0)
            at = 0
            for lin, size in zip(linears, self.sizes, strict=True):
                lin.weight16 = joined[at : at + size]  # a view: the joined matrix holds the bytes
                at += size
            self.weight = joined
            if any(lin.bias is not None for lin in linears):
                zero = [torch.zeros(n) for n in self.sizes]
                self.bias = torch.cat(
                    [
                        lin.bias if lin.bias is not None else z
                        for lin, z in zip(linears, zero, strict=True)
                    ]
                )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The projections' outputs side by side ``[1, sum of sizes]``."""
        if self.weight is None:
            return torch.cat([lin(x) for lin in self.parts], dim=-1)
        y = F.linear(x.to(torch.float16), self.weight).to(x.dtype)
        return y if self.bias is None else y + self.bias


def _out_features(linear: torch.nn.Module) -> int:
    if isinstance(linear, HalfLinear):
        return linear.weight16.shape[0]
    return linear.weight.shape[0]


class DecodeStep:
    """Computes one position of a Llama-shaped causal LM into a GrowingCache (see module doc)."""

    def __init__(self, model):
        inner = model.model
        cfg = model.config
        self.model = model
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.inv_freq = inner.rotary_emb.inv_freq.float()
        self.half_turn = _half_turn(self.head_dim)
        self.layers = []
        for layer in inner.layers:
            att, mlp = layer.self_attn, layer.mlp
            self.layers.append(
                (
                    layer.input_layernorm,
                    _Joined([att.q_proj, att.k_proj, att.v_proj]),
                    _Joined([att.o_proj]),
                    layer.post_attention_layernorm,
                    _Joined([mlp.gate_proj, mlp.up_proj]),
                    _Joined([mlp.down_proj]),
                )
            )
        self.norm = inner.norm
        self.head = model.lm_head

    @classmethod
    def of(cls, model) -> DecodeStep | None:
        """A step for ``model``, or None where it would not compute what the model computes
        (another architecture, scaled or dynamic RoPE, sliding windows, attention biases on
        the output, activations other than SiLU)."""
        cfg = getattr(model, "config", None)
        inner = getattr(model, "model", None)
        if cfg is None or inner is None or getattr(cfg, "model_type", None) not in _LLAMA_SHAPED:
            return None
        rotary = getattr(inner, "rotary_emb", None)
        if rotary is None or getattr(rotary, "rope_type", None) != "default":
            return None
        if float(getattr(rotary, "attention_scaling", 1.0)) != 1.0:
            return None
        if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "mlp_bias", False):
            return None
        if getattr(cfg, "use_sliding_window", True) and getattr(cfg, "sliding_window", None):
            return None  # Mistral's window; Qwen2 names one but switches it off
        for layer in inner.layers:
            if getattr(layer.self_attn, "o_proj", None) is None or not hasattr(layer, "mlp"):
                return None
        return cls(model)

    @torch.no_grad()
    def __call__(self, embed: torch.Tensor, position: int, cache) -> torch.Tensor:
        """Logits ``[1, 1, vocab]`` for the input vector ``embed [1, 1, d]`` at ``position``;
        its keys and values are appended to ``cache`` (a GrowingCache, one per layer)."""
        h = embed.reshape(1, -1).float()
        nh, nkv, hd = self.n_heads, self.n_kv, self.head_dim
        group = nh // nkv
        cos, sin = self._rotation(position)
        for layer, (norm1, qkv, o_proj, norm2, gate_up, down) in zip(
            cache.layers, self.layers, strict=True
        ):
            qkv_out = qkv(_rms(norm1, h))
            # the query and key heads are adjacent in the joined output: rotate them at once;
            # the query rows of cos/sin carry the attention scale
            qk = qkv_out[:, : (nh + nkv) * hd].view(nh + nkv, hd)
            qk = torch.addcmul(qk * cos, qk @ self.half_turn, sin)
            v = qkv_out[:, (nh + nkv) * hd :]
            keys, values = layer.update(qk[nh:].view(1, nkv, 1, hd), v.view(1, nkv, 1, hd))
            scores = torch.matmul(qk[:nh].view(nkv, group, hd), keys[0].transpose(-1, -2))
            att = torch.matmul(torch.softmax(scores, dim=-1), values[0])  # [nkv, group, hd]
            h = h + o_proj(att.reshape(1, nh * hd))
            gate, up = gate_up(_rms(norm2, h)).chunk(2, dim=-1)
            h = h + down(F.silu(gate) * up)
        return self.head(_rms(self.norm, h)).view(1, 1, -1)

    def _rotation(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin ``[heads + kv heads, head_dim]`` of the rotary embedding at
        ``position``, the query rows times the attention scale (a linear map, so scaling the
        rotated query equals scaling the scores)."""
        freqs = float(position) * self.inv_freq
        emb = torch.cat((freqs, freqs))
        rows = torch.ones(self.n_heads + self.n_kv, 1)
        rows[: self.n_heads] = self.scale
        return rows * emb.cos(), rows * emb.sin()


def _rms(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Llama's RMSNorm, as transformers computes it in fp32 (torch's fused ``rms_norm``
    measured slower for one position)."""
    return norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon))


def _half_turn(dim: int) -> torch.Tensor:
    """The matrix R with ``x @ R == rotate_half(x)`` = ``cat(-x[half:], x[:half])``."""
    half = dim // 2
    r = torch.zeros(dim, dim)
    idx = torch.arange(half)
    r[idx + half, idx] = -1.0
    r[idx, idx + half] = 1.0
    return r
