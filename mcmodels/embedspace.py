"""The shared footing of every network that reads or writes the base model's embedding space.

GistNet, LensNet and the soft-prompt baseline all centre inputs (or scale outputs) with the base
model's embedding mean and deviation RMS; keeping them as buffers means a checkpoint carries the
exact statistics it was trained with, and a loaded network needs no base model to rescale.
"""

from __future__ import annotations

import torch
from torch import nn


class EmbeddingSpaceModule(nn.Module):
    def __init__(self, d_model: int, *, emb_mean=None, emb_dev_rms=None):
        super().__init__()
        mean = torch.zeros(d_model) if emb_mean is None else emb_mean.float().clone()
        rms = torch.tensor(1.0) if emb_dev_rms is None else torch.as_tensor(emb_dev_rms).float()
        self.register_buffer("emb_mean", mean)
        self.register_buffer("emb_dev_rms", rms.clone())
        # set by mcmodels.checkpoint when loaded from (or saved to) a checkpoint
        self.checkpoint_id: str | None = None
        self.checkpoint_hash: str | None = None

    @staticmethod
    def stats_of(base, token_weights=None) -> dict:
        """Constructor keywords carrying ``base``'s embedding statistics."""
        st = base.embedding_stats(token_weights)
        return {"emb_mean": st["mean"], "emb_dev_rms": st["dev_rms"]}
