"""Store commands of `mc`: info, log, tag, fork, gc, verify. No model needed."""

from __future__ import annotations

import json
import time
from typing import ClassVar

import click

import mcstore
from cli.main import cli
from cli.options import drop_tags_option, storage_options_option, tree_argument, version_arg
from cli.params import FINITE_FLOAT, finite


def _human(n: int) -> str:
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if x < 1024 or unit == "TiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return str(n)


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


class Duration(click.ParamType):
    """Seconds, or a number with a unit: 30s, 15m, 12h, 7d, 2w (finite: nan/inf refused)."""

    name = "duration"
    UNITS: ClassVar[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

    def convert(self, value, param, ctx):
        if isinstance(value, int | float):
            return finite(value, param, ctx)
        text = str(value).strip().lower()
        unit = self.UNITS.get(text[-1:]) if text else None
        try:
            n = float(text[:-1] if unit else text)
        except ValueError:
            self.fail(f"{value!r} is not a duration (e.g. 7d, 12h, 30m, 3600)", param, ctx)
        n = finite(n * (unit or 1), param, ctx, text=value)
        if n < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return n


DURATION = Duration()


@cli.command()
@tree_argument()
@click.option("--version", "version", default=None, help="A version number or tag name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@storage_options_option
def info(tree: str, version: str | None, as_json: bool, storage_options) -> None:
    """Show a tree: format, length, levels, dims, binding, version, bytes, segments, tags."""
    t = mcstore.open(tree, version=version_arg(version), storage_options=storage_options or None)
    d = t.info()
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
        return
    click.echo(f"tree      {d['url']}")
    click.echo(f"format    {d['format']}  (block {d['block']}, epoch {d['epoch']} tokens)")
    click.echo(f"version   {d['version']}")
    click.echo(f"length    {d['length']} tokens")
    lv = ", ".join(f"L{x['level']}: {x['nodes']}" for x in d["levels"]) or "none"
    click.echo(f"levels    {len(d['levels'])}  ({lv})")
    click.echo(f"gists     d={d['dim']} {d['dtype']}")
    b = d["binding"]
    if b:
        tok, g = b.get("tokenizer") or {}, b.get("gistnet") or {}
        click.echo(
            f"binding   tokenizer {tok.get('name')} ({tok.get('hash')}); "
            f"gistnet {g.get('id')} ({g.get('hash')})"
        )
    else:
        click.echo("binding   none")
    click.echo(f"segments  {d['segments']}")
    click.echo(f"storage   {_human(d['bytes'])} ({d['bytes']} bytes)")
    tags = ", ".join(f"{k}={v}" for k, v in sorted(d["tags"].items())) or "none"
    click.echo(f"tags      {tags}")
    if d["objects"]:
        click.echo(f"objects   {', '.join(d['objects'])}")
    if d["forked_from"]:
        click.echo(f"forked    from {' <- '.join(reversed(d['forked_from']))}")


@cli.command()
@tree_argument()
@click.option("-n", "--limit", type=int, default=None, help="Show only the newest N commits.")
@storage_options_option
def log(tree: str, limit: int | None, storage_options) -> None:
    """List the commits of a tree, newest first."""
    t = mcstore.open(tree, storage_options=storage_options or None)
    for e in t.log(limit=limit):
        click.echo(f"{e.version:>6}  {_when(e.time)}  {e.length:>12} tokens  {e.message or ''}")


@cli.command()
@tree_argument()
@click.argument("name")
@click.option(
    "--version", default=None, help="Version number or tag name to tag (default: newest)."
)
@click.option("--force", is_flag=True, help="Move an existing tag.")
@storage_options_option
def tag(tree: str, name: str, version: str | None, force: bool, storage_options) -> None:
    """Name a version of TREE (a snapshot that time travel and gc respect)."""
    so = storage_options or None
    t = mcstore.open(tree, "a", storage_options=so)
    v = version_arg(version)
    if isinstance(v, str):  # another tag's name: the version it names
        v = mcstore.open(tree, version=v, storage_options=so).version
    try:
        v = t.tag(name, v, force=force)
    except mcstore.TreeExists as e:
        old = t.tags().get(name)
        if old is None:
            raise
        raise mcstore.TreeExists(
            f"{tree}: tag {name!r} already names version {old}; pick another name, or pass "
            "--force to move it"
        ) from e
    click.echo(f"tagged version {v} of {t.url} as {name!r}")


@cli.command()
@tree_argument("src")
@click.argument("dst")
@click.option("--version", default=None, help="Version number or tag to fork (default: newest).")
@storage_options_option
def fork(src: str, dst: str, version: str | None, storage_options) -> None:
    """Start a new tree DST from SRC, sharing SRC's immutable shards (copy-on-write)."""
    from mcruntime.location import check_new

    check_new(dst)  # a file or a folder of other files at DST: refused, one line
    t = mcstore.fork(
        src, dst, version=version_arg(version), storage_options=storage_options or None
    )
    click.echo(f"forked {src} -> {t.url} ({t.length} tokens)")
    for note in t.notes:
        click.echo(f"note: {note}", err=True)


@cli.command()
@tree_argument()
@click.option(
    "--grace",
    type=FINITE_FLOAT,
    default=3600.0,
    show_default=True,
    help="Keep unreferenced objects younger than this many seconds (at least 900 while a "
    "writer may be live: a shorter grace can delete the data of a commit in progress).",
)
@click.option(
    "--keep-last",
    type=click.IntRange(1),
    default=None,
    help="Expire snapshots older than the newest N (with --keep-since: only those older "
    "than both). Tagged and fork-pinned versions are never expired.",
)
@click.option(
    "--keep-since",
    type=DURATION,
    default=None,
    help="Expire snapshots older than this (e.g. 7d, 12h, 30m, 3600 seconds).",
)
@click.option(
    "--no-live-writers",
    is_flag=True,
    help="Promise that nobody writes TREE now, which allows a --grace below 900 s.",
)
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@click.option(
    "--purge",
    is_flag=True,
    help="Make what `mc forget` took out unreadable everywhere: expire every version before "
    "the newest forget and delete every object only they reach, whatever its age.",
)
@drop_tags_option
@storage_options_option
def gc(
    tree: str,
    grace: float,
    keep_last: int | None,
    keep_since: float | None,
    no_live_writers: bool,
    dry_run: bool,
    purge: bool,
    drop_tags: bool,
    storage_options,
) -> None:
    """Reclaim space: remove objects no kept commit, tag or pin reaches.

    By default every snapshot is kept and only debris goes (crashed or losing writers,
    unfinished regists). --keep-last / --keep-since also expire old snapshots: their data is
    removed and they can no longer be opened; every kept version still reads bit for bit.
    --purge finishes a forget (see `mc forget`)."""
    if purge:
        from cli.forget_cmds import echo_purge

        echo_purge(
            mcstore.purge(
                tree,
                storage_options=storage_options or None,
                drop_tags=drop_tags,
                dry_run=dry_run,
                grace=grace,
                no_live_writers=no_live_writers,
            )
        )
        return
    rep = mcstore.gc(
        tree,
        storage_options=storage_options or None,
        grace=grace,
        dry_run=dry_run,
        keep_last=keep_last,
        keep_since=keep_since,
        no_live_writers=no_live_writers,
    )
    verb = "would remove" if dry_run else "removed"
    expired = (
        f"expired {len(rep.expired)} snapshots, kept {rep.kept_versions}; "
        if (keep_last or keep_since)
        else ""
    )
    click.echo(
        f"{verb} {len(rep.removed)} objects ({_human(rep.bytes_freed)}) from {rep.url}; "
        f"{expired}kept {rep.reachable} reachable, {len(rep.kept_young)} too young; "
        f"merged {rep.telemetry_merged} telemetry files"
    )
    for note in rep.notes:
        click.echo(f"note: {note}", err=True)


@cli.command()
@tree_argument()
@click.option("--version", default=None, help="Version number or tag (default: newest).")
@storage_options_option
def verify(tree: str, version: str | None, storage_options) -> None:
    """Read every committed row of TREE and check every checksum."""
    r = mcstore.verify(tree, version=version_arg(version), storage_options=storage_options or None)
    expired = f" ({r['expired']} expired)" if r["expired"] else ""
    click.echo(
        f"ok: {r['url']} version {r['version']}: {r['rows']} rows in {r['shards']} shards "
        f"and the tail, {r['records']} commit "
        f"records{expired}, {r['objects']} objects, {r['tags']} tags verified"
    )
