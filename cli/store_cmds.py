"""Store commands of `mc`: info, log, tag, fork, gc, verify. No model needed."""

from __future__ import annotations

import json
import time

import click

import mcstore
from cli.main import cli
from cli.options import storage_options_option


def _version_arg(v: str | None):
    if v is None:
        return None
    return int(v) if v.isdigit() else v


def _human(n: int) -> str:
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if x < 1024 or unit == "TiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return str(n)


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


@cli.command()
@click.argument("tree")
@click.option("--version", "version", default=None, help="A version number or tag name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@storage_options_option
def info(tree: str, version: str | None, as_json: bool, storage_options) -> None:
    """Show a tree: format, length, levels, dims, binding, version, bytes, segments, tags."""
    t = mcstore.open(tree, version=_version_arg(version), storage_options=storage_options or None)
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
@click.argument("tree")
@click.option("-n", "--limit", type=int, default=None, help="Show only the newest N commits.")
@storage_options_option
def log(tree: str, limit: int | None, storage_options) -> None:
    """List the commits of a tree, newest first."""
    t = mcstore.open(tree, storage_options=storage_options or None)
    for e in t.log(limit=limit):
        click.echo(f"{e.version:>6}  {_when(e.time)}  {e.length:>12} tokens  {e.message or ''}")


@cli.command()
@click.argument("tree")
@click.argument("name")
@click.option("--version", type=int, default=None, help="Version to tag (default: newest).")
@click.option("--force", is_flag=True, help="Move an existing tag.")
@storage_options_option
def tag(tree: str, name: str, version: int | None, force: bool, storage_options) -> None:
    """Name a version of TREE (a snapshot that time travel and gc respect)."""
    t = mcstore.open(tree, "a", storage_options=storage_options or None)
    v = t.tag(name, version, force=force)
    click.echo(f"tagged version {v} of {t.url} as {name!r}")


@cli.command()
@click.argument("src")
@click.argument("dst")
@click.option("--version", default=None, help="Version number or tag to fork (default: newest).")
@storage_options_option
def fork(src: str, dst: str, version: str | None, storage_options) -> None:
    """Start a new tree DST from SRC, sharing SRC's immutable shards (copy-on-write)."""
    t = mcstore.fork(
        src, dst, version=_version_arg(version), storage_options=storage_options or None
    )
    click.echo(f"forked {src} -> {t.url} ({t.length} tokens)")
    for note in t.notes:
        click.echo(f"note: {note}", err=True)


@cli.command()
@click.argument("tree")
@click.option(
    "--grace",
    type=float,
    default=3600.0,
    show_default=True,
    help="Keep unreferenced objects younger than this many seconds.",
)
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@storage_options_option
def gc(tree: str, grace: float, dry_run: bool, storage_options) -> None:
    """Remove objects no commit, tag or pin reaches (debris of crashed or losing writers)."""
    rep = mcstore.gc(tree, storage_options=storage_options or None, grace=grace, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {len(rep.removed)} objects ({_human(rep.bytes_freed)}) from {rep.url}; "
        f"kept {rep.reachable} reachable, {len(rep.kept_young)} too young; "
        f"merged {rep.telemetry_merged} telemetry files"
    )


@cli.command()
@click.argument("tree")
@click.option("--version", default=None, help="Version number or tag (default: newest).")
@storage_options_option
def verify(tree: str, version: str | None, storage_options) -> None:
    """Read every committed row of TREE and check every checksum."""
    r = mcstore.verify(tree, version=_version_arg(version), storage_options=storage_options or None)
    click.echo(f"ok: {r['url']} version {r['version']}, {r['rows']} rows verified")
