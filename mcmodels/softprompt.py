"""A trained content-free soft prompt: the baseline a GistNet must beat besides the control.

``SoftPrompt.prefix(b, g)`` returns ``g`` learned vectors (the same for every window), in the base
model's embedding space, at the scale of a token embedding. Trained with the same loss and views
as GistNet (``mc train gistnet --softprompt``), it shows how much of a gist view's gain a harmless,
content-free prefix already buys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from mcmodels.embedspace import EmbeddingSpaceModule


@dataclass
class SoftPromptConfig:
    d_model: int
    max_len: int = 512

    def to_dict(self) -> dict:
        return asdict(self)


class SoftPrompt(EmbeddingSpaceModule):
    kind = "softprompt"

    def __init__(self, cfg: SoftPromptConfig, *, emb_mean=None, emb_dev_rms=None):
        super().__init__(cfg.d_model, emb_mean=emb_mean, emb_dev_rms=emb_dev_rms)
        self.cfg = cfg
        d = cfg.d_model
        self.vectors = nn.Parameter(torch.randn(cfg.max_len, d) / d**0.5)

    @classmethod
    def for_base(cls, base, *, token_weights=None, **kw) -> SoftPrompt:
        return cls(
            SoftPromptConfig(d_model=base.d_model, **kw),
            **cls.stats_of(base, token_weights),
        )

    def prefix(self, b: int, g: int) -> torch.Tensor:
        v = nn.functional.normalize(self.vectors[:g], dim=-1)  # the LAST g slots would also do
        return (self.emb_mean + self.emb_dev_rms * v)[None].expand(b, -1, -1)
