"""Options shared by every command that opens a tree."""

from __future__ import annotations

import json

import click


def _parse_storage_options(ctx, param, values) -> dict:
    out: dict = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not key=value", ctx=ctx, param=param)
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)  # numbers, booleans, nested JSON
        except json.JSONDecodeError:
            value = raw
        cur = out
        *parents, leaf = key.split(".")  # client_kwargs.endpoint_url=… nests
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[leaf] = value
    return out


storage_options_option = click.option(
    "--storage-option",
    "storage_options",
    multiple=True,
    callback=_parse_storage_options,
    metavar="KEY=VALUE",
    help="fsspec storage option (repeatable; dots nest: client_kwargs.endpoint_url=URL).",
)


def tree_url(tree: str) -> str:
    """A tree path or URL as the store expects it."""
    return tree
