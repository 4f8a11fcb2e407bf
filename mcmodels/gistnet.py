"""GistNet: 32 vectors → 1 vector in the base model's embedding space.

Architecture (``mcmodels/README.md#gistnet--lensnet``; shaped by the lessons of the CPU probe):

* inputs are first **centred**: the base model's mean embedding (the corpus-mean direction every
  token shares) is subtracted, and the rest divided by the typical deviation norm, so a block's
  content, not the shared direction, drives the network;
* a learned pooling token plus 32 inputs (with position and **level** embeddings) go through a
  small **bidirectional** transformer encoder; the pooling token's output is the learned part;
* output = ``mean + dev_rms · (a · unit(centred mean of the block) + b · unit(learned part))``:
  the learned part is normalised **on its own** (it cannot grow until every gist is the same
  vector), ``a`` and ``b`` are learned scalars, and the result has the scale of a real token
  embedding. One network for every level; level-ℓ+1 gists are made from level-ℓ gists.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mcmodels.embedspace import EmbeddingSpaceModule

BLOCK = 32


@dataclass
class GistNetConfig:
    d_model: int  # the base model's embedding width
    hidden: int = 256
    layers: int = 2
    heads: int = 4
    ffn_mult: int = 4
    block: int = BLOCK
    max_level: int = 8
    dropout: float = 0.0
    mean_init: float = 1.0  # initial weight of the centred-mean term
    learned_init: float = 0.5  # initial weight of the learned term

    def to_dict(self) -> dict:
        return asdict(self)


class GistNet(EmbeddingSpaceModule):
    kind = "gistnet"

    def __init__(self, cfg: GistNetConfig, *, emb_mean=None, emb_dev_rms=None):
        super().__init__(cfg.d_model, emb_mean=emb_mean, emb_dev_rms=emb_dev_rms)
        self.cfg = cfg
        d, h = cfg.d_model, cfg.hidden
        self.inp = nn.Linear(d, h)
        self.pos = nn.Parameter(torch.randn(cfg.block, h) * 0.02)
        self.level_emb = nn.Embedding(cfg.max_level + 1, h)
        nn.init.normal_(self.level_emb.weight, std=0.02)
        self.pool = nn.Parameter(torch.randn(1, 1, h) * 0.02)
        layer = nn.TransformerEncoderLayer(
            h,
            cfg.heads,
            dim_feedforward=cfg.ffn_mult * h,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(h)
        self.out = nn.Linear(h, d)
        self.mix = nn.Parameter(torch.tensor([cfg.mean_init, cfg.learned_init]))

    @classmethod
    def for_base(cls, base, *, token_weights=None, seed: int | None = None, **overrides) -> GistNet:
        """A fresh GistNet sized and scaled for ``base`` (its embedding statistics as buffers;
        ``token_weights``: corpus unigram counts, so the removed direction is the corpus mean).

        ``seed``: draw the initial weights from a generator of this seed (the same network on
        every machine, e.g. the untrained one a session uses when no checkpoint ships) and
        leave the global RNG as it was; None draws them from the global RNG (training)."""
        cfg = GistNetConfig(d_model=base.d_model, **overrides)
        if seed is None:
            return cls(cfg, **cls.stats_of(base, token_weights))
        with torch.random.fork_rng(devices=[]):  # construction's own draws are discarded
            net = cls(cfg, **cls.stats_of(base, token_weights))
        net.init_weights(torch.Generator().manual_seed(seed))
        return net

    @torch.no_grad()
    def init_weights(self, gen: torch.Generator) -> None:
        """Every random initial weight drawn from ``gen``, by PyTorch's default rules for each
        layer (``nn.Linear``: Kaiming-uniform weight and uniform bias; attention input
        projections: Xavier-uniform, zero biases) and N(0, 0.02) for the embeddings, positions
        and pooling token; layer norms and the mix keep their deterministic starts."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=gen)
                if m.bias is not None:
                    bound = 1 / math.sqrt(m.weight.shape[1])
                    nn.init.uniform_(m.bias, -bound, bound, generator=gen)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02, generator=gen)
        for m in self.modules():
            if isinstance(m, nn.MultiheadAttention):
                nn.init.xavier_uniform_(m.in_proj_weight, generator=gen)
                nn.init.zeros_(m.in_proj_bias)
                nn.init.zeros_(m.out_proj.bias)
        nn.init.normal_(self.pos, std=0.02, generator=gen)
        nn.init.normal_(self.pool, std=0.02, generator=gen)

    def forward(self, x: torch.Tensor, level) -> torch.Tensor:
        """``x`` [b, 32, d] (token embeddings for level 1, level-ℓ gists for level ℓ+1);
        ``level``: the level of the gist being made (1, 2, …), an int or LongTensor [b]."""
        b, n, d = x.shape
        if n != self.cfg.block or d != self.cfg.d_model:
            raise ValueError(
                f"GistNet expects [b, {self.cfg.block}, {self.cfg.d_model}], got {tuple(x.shape)}"
            )
        x = x.float()
        lv = torch.as_tensor(level, device=x.device, dtype=torch.long)
        if lv.dim() == 0:
            lv = lv.expand(b)
        lv = lv.clamp(0, self.cfg.max_level)
        xc = (x - self.emb_mean) / self.emb_dev_rms
        hdn = self.inp(xc) + self.pos + self.level_emb(lv)[:, None, :]
        pool = self.pool.expand(b, 1, -1) + self.level_emb(lv)[:, None, :]
        hdn = self.encoder(torch.cat([pool, hdn], dim=1))
        learned = self.out(self.out_norm(hdn[:, 0]))
        mean_dir = xc.mean(1)
        unit_mean = F.normalize(mean_dir, dim=-1)
        unit_learn = F.normalize(learned, dim=-1)
        g = self.mix[0] * unit_mean + self.mix[1] * unit_learn
        # a token's centred embedding has norm ≈ dev_rms; so does a gist with |mix| ≈ 1
        return self.emb_mean + self.emb_dev_rms * g

    def gist_levels(self, emb: torch.Tensor, top_level: int) -> list[torch.Tensor]:
        """All gists up to ``top_level`` for token embeddings ``emb`` [b, 32**top_level·k, d]:
        returns ``[g1 [b, n/32, d], g2 [b, n/1024, d], ...]`` computed bottom-up, end to end."""
        out = []
        cur = emb
        for lv in range(1, top_level + 1):
            b, n, d = cur.shape
            k = n // self.cfg.block
            blocks = cur[:, : k * self.cfg.block].reshape(b * k, self.cfg.block, d)
            cur = self(blocks, lv).reshape(b, k, d)
            out.append(cur)
        return out


def mean_pool_gist(x: torch.Tensor, level=None) -> torch.Tensor:
    """The naive baseline: the plain mean of the 32 inputs."""
    return x.float().mean(1)


def gist_diversity(gists: torch.Tensor, center: torch.Tensor | None = None) -> float:
    """Mean pairwise cosine between gists (rows of [n, d]) after removing ``center``:
    near 1.0 means every gist is the same vector (collapse)."""
    g = gists.detach().float()
    if center is not None:
        g = g - center
    g = F.normalize(g, dim=-1)
    n = g.shape[0]
    if n < 2:
        return float("nan")
    sim = g @ g.T
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))
