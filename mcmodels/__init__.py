"""mcmodels: base-LM backends, GistNet, LensNet, checkpoints, training data, training and evaluation.

Public API (the runtime relies on these names)::

    base = mcmodels.load_base("smollm2-135m-instruct", device=None)   # or mcmodels.tiny_base(seed=0)
    base.embed(ids) ; base.forward(embeds, position_ids, cache=None, last_k=None) ; base.crop_cache(c, n)
    base.tokenizer.encode/decode/chat_ids/chat_parts ; base.binding()
    gist = mcmodels.GistNet.for_base(base) ; gist(x[b, 32, d], level) -> [b, d]
    lens = mcmodels.LensNet.for_base(base) ; lens(entries, levels, features, query, mask) -> [b, n]
    mcmodels.entry_features(levels, starts, now) -> [.., n, 4]   (LensNet's features)
    mcmodels.save_checkpoint(m, path, base=, recipe=, metrics=) ; load_gistnet(path) ; load_lensnet(path)
    mcmodels.default_gistnet(base) / default_lensnet(base) -> shipped checkpoint or None

mcmodels never imports mcstore or mcruntime. Heavy parts (training, corpus, evaluation) are
separate modules imported on demand.
"""

from mcmodels.base import DEFAULT_MODEL, BaseLM, ForwardOut, cache_root, load_base, tiny_base
from mcmodels.checkpoint import (
    default_gistnet,
    default_lensnet,
    load_gistnet,
    load_lensnet,
    load_softprompt,
    read_record,
    save_checkpoint,
    shipped_checkpoints,
)
from mcmodels.errors import (
    CheckpointError,
    CorpusError,
    ModelError,
    ModelNotFoundError,
    PositionError,
)
from mcmodels.gistnet import BLOCK, GistNet, GistNetConfig, gist_diversity, mean_pool_gist
from mcmodels.lensnet import LensNet, LensNetConfig, entry_features
from mcmodels.tokenizer import ByteTokenizer, ChatParts, HFTokenizer

__all__ = [
    "BLOCK",
    "DEFAULT_MODEL",
    "BaseLM",
    "ByteTokenizer",
    "ChatParts",
    "CheckpointError",
    "CorpusError",
    "ForwardOut",
    "GistNet",
    "GistNetConfig",
    "HFTokenizer",
    "LensNet",
    "LensNetConfig",
    "ModelError",
    "ModelNotFoundError",
    "PositionError",
    "cache_root",
    "default_gistnet",
    "default_lensnet",
    "entry_features",
    "gist_diversity",
    "load_base",
    "load_gistnet",
    "load_lensnet",
    "load_softprompt",
    "mean_pool_gist",
    "read_record",
    "save_checkpoint",
    "shipped_checkpoints",
    "tiny_base",
]
