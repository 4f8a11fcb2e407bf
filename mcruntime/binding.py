"""The binding: what a tree records about the models that built it, and what a change means.

The store keeps the binding as an opaque JSON object (``Tree.binding``, ``same_binding``);
its schema and its meaning are the runtime's. A binding names the tokenizer (token ids mean
text only through it), the GistNet that made the gists (another one makes them stale: regist
them), their width and dtype, and the kind of retrieval keys the tree's index holds. See
``docs/architecture.md#storage-format``.
"""

from __future__ import annotations

import mcstore
from mcruntime.retrieval import Keys


def gistnet_binding(base, gistnet, dtype: str = "float16") -> dict:
    """The binding of a tree built by ``base``'s tokenizer and ``gistnet``."""
    return {
        "tokenizer": base.binding(),
        "gistnet": {
            "id": getattr(gistnet, "checkpoint_id", None) or "untrained",
            "hash": getattr(gistnet, "checkpoint_hash", None) or "untrained",
            "dim": base.d_model,
            "dtype": dtype,
        },
    }


def gister_id(binding: dict | None) -> str | None:
    """The name a tree's table of gisters records for the GistNet of ``binding``."""
    return ((binding or {}).get("gistnet") or {}).get("id")


def check_binding(tree, binding: dict) -> bool:
    """True if ``tree`` was gisted by the models of ``binding``; False if only the GistNet
    differs (its gists are stale: regist them). ``mcstore.BindingMismatch`` if the tokenizer
    or the gist width differs, because then the tree cannot be read with these models."""
    mine = tree.binding
    g = binding.get("gistnet") or {}
    if g.get("dim") is not None and int(g["dim"]) != tree.dim:
        raise mcstore.BindingMismatch(
            f"{tree.url}: tree has gist width d={tree.dim} but the model gives d={g['dim']}; "
            "use the model this tree was built with, or ingest the text into a new tree"
        )
    if mine is None:
        return False
    mt, bt = mine.get("tokenizer") or {}, binding.get("tokenizer") or {}
    if (mt.get("name"), mt.get("hash")) != (bt.get("name"), bt.get("hash")):
        raise mcstore.BindingMismatch(
            f"{tree.url}: tree was built with tokenizer {mt.get('name')!r} "
            f"(hash {mt.get('hash')!r}) but the model uses {bt.get('name')!r} "
            f"(hash {bt.get('hash')!r}); token ids would mean different text: use the "
            "matching model"
        )
    same = mcstore.canonical_json(mine.get("gistnet")) == mcstore.canonical_json(g)
    return same


DEFAULT_RETRIEVAL = Keys.BM25  # the kind of trees that recorded none (made before the record)
# The kind a new tree gets: words and meaning (static keys cost a table lookup at ingest;
# ``mcruntime.static_keys``, ``bench/results/static_keys.md``).
NEW_TREE_RETRIEVAL = Keys.HYBRID


def retrieval_kind(wanted: str | None, recorded: dict | None, *, new: bool = False) -> str | None:
    """The kind of retrieval keys a session uses: ``wanted`` (``SessionConfig.retrieval``), or
    for ``"auto"`` the kind recorded in the tree's binding ``recorded`` (recorded, not checked:
    any kind can be rebuilt from the tokens); for a tree about to be created (``new``),
    ``NEW_TREE_RETRIEVAL``."""
    if wanted != "auto":
        return wanted
    if new:
        return NEW_TREE_RETRIEVAL
    return ((recorded or {}).get("retrieval") or {}).get("kind") or DEFAULT_RETRIEVAL


def session_binding(
    base, gistnet, dtype: str, kind: str | None, recorded: dict | None = None
) -> dict:
    """The whole binding a session records when it creates a tree with keys of ``kind`` (or
    writes to one whose binding is ``recorded``: a hybrid tree keeps its meaning keys)."""
    out = gistnet_binding(base, gistnet, dtype)
    # the kind later sessions pick by default; a session without retrieval keeps the tree's
    kind = kind or retrieval_kind("auto", recorded, new=recorded is None)
    out["retrieval"] = {"kind": kind}
    if kind == Keys.HYBRID:
        from mcruntime.static_keys import spec_from_id

        had = ((recorded or {}).get("retrieval") or {}).get("dense")
        out["retrieval"]["dense"] = spec_from_id(had).id(base)
    return out
