"""Options shared by every command that opens a tree."""

from __future__ import annotations

import json
import os
import sys

import click


def _parse_storage_options(ctx, param, values) -> dict:
    out: dict = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not key=value", ctx=ctx, param=param)
        key, raw = item.split("=", 1)
        value: object = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            try:  # numbers and nested JSON objects; anything else stays a string
                value = json.loads(raw) if raw[:1] in "{[" else int(raw)
            except ValueError:
                value = raw
        cur = out
        *parents, leaf = key.split(".")  # client_kwargs.endpoint_url=… nests
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[leaf] = value
    return out


storage_options_option = click.option(
    "--storage-option",
    "-o",
    "storage_options",
    multiple=True,
    callback=_parse_storage_options,
    metavar="KEY=VALUE",
    help="fsspec storage option (repeatable; dots nest: client_kwargs.endpoint_url=URL).",
)


def tree_url(tree: str) -> str:
    """A tree path or URL as the store expects it."""
    return tree


def progress_bar(*, enabled: bool | None = None, **kw):
    """A tqdm bar on stderr: on when stderr is a terminal (``enabled=None``), or as asked.

    A terminal that reports a size of 0x0 (some ptys) would make tqdm draw nothing: it gets a
    fixed size instead; so does a bar forced on where stderr is not a terminal.
    """
    from tqdm import tqdm

    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        size = os.terminal_size((0, 0))
    sizing = {"dynamic_ncols": True} if min(size) > 0 else {"ncols": 100, "nrows": 24}
    return tqdm(file=sys.stderr, disable=None if enabled is None else not enabled, **sizing, **kw)
