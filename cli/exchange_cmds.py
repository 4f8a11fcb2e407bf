"""`mc export` and `mc import`: a memory as JSON lines (``mcruntime.exchange``)."""

from __future__ import annotations

import sys

import click

from cli.main import cli
from cli.options import storage_options_option, tree_argument, version_arg
from cli.run_cmds import gistnet_option, model_option, window_option


@cli.command("export")
@tree_argument()
@click.option("--version", "version", default=None, help="A version number or tag name.")
@model_option
@storage_options_option
def export_cmd(tree: str, version: str | None, model: str, storage_options) -> None:
    """Write TREE's segments as JSON lines to stdout: id, source, tags, role, created, text."""
    from mcruntime.exchange import export_lines, open_for_export

    t, tok = open_for_export(
        tree, model, version=version_arg(version), storage_options=storage_options or None
    )
    out = sys.stdout
    for line in export_lines(t, tok):
        out.write(line)
    out.flush()


@cli.command("import")
@tree_argument()
@click.argument("file", type=click.File("rb"))
@model_option
@gistnet_option
@window_option
@storage_options_option
def import_cmd(tree: str, file, model: str, gistnet, window, storage_options) -> None:
    """Append the segments of FILE (JSON lines as `mc export` writes them; - for stdin) to TREE,
    creating it on first use. Every line is checked before anything is written. Re-running
    after an interruption continues after the lines already imported."""
    from mcruntime import Session
    from mcruntime.exchange import import_records, parse_lines

    recs = parse_lines(file)
    if not recs:
        raise click.UsageError(f"{file.name}: no segments to import")
    s = Session(
        tree, model=model, gistnet=gistnet, window=window, storage_options=storage_options or None
    )
    with s:
        done = import_records(s, recs)
    click.echo(
        f"imported {done['imported']} segment(s) in {done['commits']} commit(s)"
        + (f"; {done['skipped']} already there" if done["skipped"] else "")
        + f"; {tree} is at version {s.tree.version} with {s.tree.length} tokens"
    )
