"""LensNet: one signed focus score per working-context entry.

Inputs: the working context's entry vectors ``[b, n, d]`` (token embeddings and gists, as the base
model sees them), their levels ``[b, n]`` (0 = raw token), per-entry features ``[b, n, f]`` (see
:func:`entry_features`: the runtime and training must compute them the same way), the query
``[b, q, d]`` (embeddings of the newest raw tokens) and a validity mask ``[b, n]``.

A small **non-causal** transformer: every layer lets the entries attend to each other (the whole
window) and cross-attend to the query. Output ``> 0``: the entry wants more detail (expand);
``< 0``: it can give detail up (its sibling group may collapse). Masked entries score 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from mcmodels.embedspace import EmbeddingSpaceModule
from mcmodels.gistnet import BLOCK

N_FEATURES = 4


def entry_features(
    levels: torch.Tensor, starts: torch.Tensor, now: int | torch.Tensor, block: int = BLOCK
) -> torch.Tensor:
    """Per-entry features ``[..., n, 4]`` from levels ``[..., n]`` and token starts ``[..., n]``.

    ``now`` is the timeline length N (tokens). Features: slot fraction in the window (0 oldest,
    1 newest), log-age of the entry's end in tokens, log-span (level·log 32), is-raw.
    """
    levels = levels.long()
    span = torch.pow(torch.tensor(float(block)), levels.float())
    end = starts.float() + span
    now_t = torch.as_tensor(now, dtype=torch.float32, device=levels.device)
    if now_t.dim() > 0:
        now_t = now_t[..., None]
    age = (now_t - end).clamp_min(0)
    n = levels.shape[-1]
    slot = torch.arange(n, device=levels.device, dtype=torch.float32) / max(n - 1, 1)
    slot = slot.expand_as(age)
    return torch.stack(
        [
            slot,
            torch.log1p(age) / math.log(1e6),
            levels.float() * math.log(block) / math.log(1e6),
            (levels == 0).float(),
        ],
        dim=-1,
    )


@dataclass
class LensNetConfig:
    d_model: int
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    ffn_mult: int = 4
    n_features: int = N_FEATURES
    max_level: int = 8
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class _Block(nn.Module):
    def __init__(self, h: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.n1 = nn.LayerNorm(h)
        self.self_attn = nn.MultiheadAttention(h, heads, dropout=dropout, batch_first=True)
        self.n2 = nn.LayerNorm(h)
        self.nq = nn.LayerNorm(h)
        self.cross = nn.MultiheadAttention(h, heads, dropout=dropout, batch_first=True)
        self.n3 = nn.LayerNorm(h)
        self.ffn = nn.Sequential(nn.Linear(h, ffn), nn.GELU(), nn.Linear(ffn, h))

    def forward(self, x, q, pad):
        y = self.n1(x)
        x = x + self.self_attn(y, y, y, key_padding_mask=pad, need_weights=False)[0]
        y = self.n2(x)
        qn = self.nq(q)
        x = x + self.cross(y, qn, qn, need_weights=False)[0]
        return x + self.ffn(self.n3(x))


class LensNet(EmbeddingSpaceModule):
    kind = "lensnet"

    def __init__(self, cfg: LensNetConfig, *, emb_mean=None, emb_dev_rms=None):
        super().__init__(cfg.d_model, emb_mean=emb_mean, emb_dev_rms=emb_dev_rms)
        self.cfg = cfg
        d, h = cfg.d_model, cfg.hidden
        self.entry_in = nn.Linear(d, h)
        self.query_in = nn.Linear(d, h)
        self.feat_in = nn.Linear(cfg.n_features, h)
        self.level_emb = nn.Embedding(cfg.max_level + 1, h)
        self.blocks = nn.ModuleList(
            [_Block(h, cfg.heads, cfg.ffn_mult * h, cfg.dropout) for _ in range(cfg.layers)]
        )
        self.head_norm = nn.LayerNorm(h)
        self.head = nn.Linear(h, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def for_base(cls, base, **overrides) -> LensNet:
        return cls(
            LensNetConfig(d_model=base.d_model, **overrides),
            **cls.stats_of(base),
        )

    def forward(self, entries, levels, features, query, mask=None) -> torch.Tensor:
        b, n, _ = entries.shape
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=entries.device)
        mask = mask.bool()
        x = (entries.float() - self.emb_mean) / self.emb_dev_rms
        q = (query.float() - self.emb_mean) / self.emb_dev_rms
        h = (
            self.entry_in(x)
            + self.level_emb(levels.long().clamp(0, self.cfg.max_level))
            + self.feat_in(features.float())
        )
        qh = self.query_in(q)
        pad = ~mask
        # a row with every entry masked would make attention NaN: let it see itself
        pad = pad & mask.any(-1, keepdim=True)
        for blk in self.blocks:
            h = blk(h, qh, pad)
        s = self.head(self.head_norm(h)).squeeze(-1)
        return s.masked_fill(~mask, 0.0)
