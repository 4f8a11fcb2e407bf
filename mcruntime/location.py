"""Where a tree may live: checks made before a tree is opened or created at a path.

A local tree is a folder. A path that is a regular file, or a folder already holding other
files, is refused with one clear error instead of an OS error (``NotADirectoryError``) or a tree
silently written among someone's files. URLs (``s3://…``) are left to the store: object stores
have no files in the way.
"""

from __future__ import annotations

import os
from pathlib import Path

import mcstore
from mcruntime.errors import PathTaken

TREE_ROOT = "zarr.json"  # what every tree folder holds (mcstore's layout)


def local_path(url: str) -> Path | None:
    """The local path of a tree URL, or None for a remote one."""
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" in url or url.startswith("memory:"):
        return None
    return Path(url)


def check_existing(url: str) -> None:
    """Raise ``mcstore.TreeNotFound`` (one line) if ``url`` is a local regular file."""
    p = local_path(url)
    if p is not None and p.is_file():
        raise mcstore.TreeNotFound(f"{url} is a file, not a MegaContext tree (a tree is a folder)")


def check_new(url: str, *, allow_nonempty: bool = False) -> None:
    """Before a tree is created at ``url``: refuse a local regular file, and a folder that holds
    other files unless ``allow_nonempty`` (``PathTaken``). A folder that already is a tree
    passes (opening it decides)."""
    p = local_path(url)
    if p is None or not p.exists():
        return
    if not p.is_dir():
        raise PathTaken(f"{url} is a file; a tree needs a folder of its own: pick another path")
    if (p / TREE_ROOT).exists() or allow_nonempty:
        return
    n = sum(1 for _ in os.scandir(p))
    if n:
        raise PathTaken(
            f"{url} is a folder of {n} {'entry' if n == 1 else 'entries'}, not a MegaContext "
            "tree; a tree created there would sit among them: pick a new or empty folder",
            entries=n,
        )
