"""mcmodels: base-LM backends, GistNet, LensNet, checkpoints, training data, training and evaluation.

Public API (the runtime relies on these names)::

    base = mcmodels.load_base("smollm2-135m-instruct", device=None)   # or mcmodels.tiny_base(seed=0)
    base.embed(ids) ; base.forward(embeds, position_ids, cache=None, last_k=None) ; base.crop_cache(c, n)
    base.tokenizer.encode/decode/chat_ids/chat_parts ; base.binding()
    base.attentions(embeds, position_ids) -> [layer][b, heads, n, n] ; base.weights_hash()
    gist = mcmodels.GistNet.for_base(base) ; gist(x[b, 32, d], level) -> [b, d]
    lens = mcmodels.LensNet.for_base(base) ; lens(entries, levels, features, query, mask) -> [b, n]
    mcmodels.entry_features(levels, starts, now) -> [.., n, 4]   (LensNet's features)
    mcmodels.save_checkpoint(m, path, base=, recipe=, metrics=) ; load_gistnet(path) ; load_lensnet(path)
    mcmodels.default_gistnet(base) / default_lensnet(base) -> shipped checkpoint or None

mcmodels never imports mcstore or mcruntime. Every name above is imported on first use (so
``import mcmodels`` alone does not load torch); heavy parts (training, corpus, evaluation) are
separate modules imported on demand.
"""

import importlib

from mcmodels.defaults import DEFAULT_MODEL, DEFAULT_READER
from mcmodels.errors import (
    CheckpointError,
    CorpusError,
    ModelError,
    ModelNotFoundError,
    PositionError,
)

# name -> the module that defines it; imported on first use, so that ``mcmodels.defaults`` and
# ``mcmodels.errors`` (and whatever imports only them, e.g. the CLI's option defaults) never
# load torch
_LAZY = {
    **dict.fromkeys(("BaseLM", "ForwardOut", "cache_root", "load_base", "tiny_base"), "base"),
    **dict.fromkeys(
        (
            "default_gistnet",
            "default_lensnet",
            "load_gistnet",
            "load_lensnet",
            "load_softprompt",
            "pick_gistnet",
            "read_record",
            "save_checkpoint",
            "shipped_checkpoints",
        ),
        "checkpoint",
    ),
    **dict.fromkeys(
        ("BLOCK", "GistNet", "GistNetConfig", "gist_diversity", "mean_pool_gist"), "gistnet"
    ),
    **dict.fromkeys(("LensNet", "LensNetConfig", "entry_features"), "lensnet"),
    **dict.fromkeys(("ByteTokenizer", "ChatParts", "HFTokenizer"), "tokenizer"),
    **dict.fromkeys(
        ("KEEPER", "ReaderNotInstalled", "load_reader", "reader_available", "resolve_reader"),
        "readers",
    ),
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mcmodels' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mcmodels.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BLOCK",
    "DEFAULT_MODEL",
    "DEFAULT_READER",
    "KEEPER",
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
    "ReaderNotInstalled",
    "cache_root",
    "default_gistnet",
    "default_lensnet",
    "entry_features",
    "gist_diversity",
    "load_base",
    "load_gistnet",
    "load_lensnet",
    "load_reader",
    "load_softprompt",
    "mean_pool_gist",
    "pick_gistnet",
    "read_record",
    "reader_available",
    "resolve_reader",
    "save_checkpoint",
    "shipped_checkpoints",
    "tiny_base",
]
