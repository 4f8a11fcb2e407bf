"""`mc forget`: take a document or a text out of a memory (``Session.forget``), and purge it."""

from __future__ import annotations

import json
import time

import click

import mcstore
from cli.main import cli
from cli.options import drop_tags_option, storage_options_option, tree_argument
from cli.run_cmds import gistnet_option, model_option


def echo_purge(rep: mcstore.PurgeReport) -> None:
    """What a purge did, or would do (shared with `mc gc --purge`)."""
    if not rep.redacted_at:
        click.echo(f"{rep.url}: nothing was forgotten; nothing to purge")
        return
    verb = "would expire" if rep.dry_run else "expired"
    click.echo(
        f"{verb} {len(rep.expired)} versions before version {rep.redacted_at} "
        f"(they held what was forgotten)"
    )
    for name, v in rep.tags_dropped.items():
        click.echo(f"{'would drop' if rep.dry_run else 'dropped'} tag {name} (version {v})")
    if rep.gc is not None:
        click.echo(
            f"removed {len(rep.gc.removed)} objects and {len(rep.shards_deleted)} replaced "
            f"shards ({rep.gc.bytes_freed} bytes) from {rep.url}"
            + (f"; {len(rep.gc.kept_young)} unreferenced objects too young" if rep.gc.kept_young
               else "")
        )  # fmt: skip
    for note in rep.notes:
        click.echo(f"note: {note}", err=True)


@cli.command("forget")
@tree_argument()
@click.option(
    "--document",
    type=click.IntRange(0),
    default=None,
    help="A document's id (as `mc export` and the server's documents list give it).",
)
@click.option("--source", default=None, help="Every document whose source name matches this glob.")
@click.option(
    "--match",
    default=None,
    help="Every occurrence of this text (case-insensitive), wherever it was remembered.",
)
@click.option(
    "--purge",
    is_flag=True,
    help="Then purge: expire the older versions that still hold it and delete their "
    "objects (see `mc gc --purge`).",
)
@drop_tags_option
@click.option("--list", "listing", is_flag=True, help="Only list what was forgotten before.")
@model_option
@gistnet_option
@storage_options_option
def forget_cmd(tree, document, source, match, purge, drop_tags, listing, model, gistnet,
               storage_options) -> None:  # fmt: skip
    """Forget a document, documents by source, or a text, in TREE: from the next version on it
    is in no answer, search, recall, export or view; every other position stays valid. Older
    versions keep it until a purge."""
    from mcruntime import Session

    opts = storage_options or None
    s = Session(tree, model=model, gistnet=gistnet, storage_options=opts, create=False)
    with s:
        if listing:
            for row in s.forgotten():
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["time"] / 1e9))
                click.echo(f"{when}  version {row['version']}  {json.dumps(row['rule'])}  "
                           f"documents {row['documents']}  {row['tokens']} tokens")  # fmt: skip
            return
        done = s.forget(document=document, source=source, match=match)
    if done.version is None:
        click.echo(f"{tree}: nothing to forget (no match, or forgotten already); unchanged")
        return
    click.echo(
        f"forgot {done.tokens} tokens in {len(done.documents)} document(s) "
        f"{done.documents}; {tree} is at version {done.version}; older versions keep it "
        + ("until this purge" if purge else "until `mc gc --purge`")
    )
    if purge:
        echo_purge(mcstore.purge(tree, storage_options=opts, drop_tags=drop_tags))
