"""`mc show`, `mc regist`: looking at a tree, updating its gists. Benchmarks are
`python -m bench …`: the command line never imports bench/."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from cli.main import cli
from cli.options import progress_bar, storage_options_option, tree_argument
from cli.run_cmds import format_focus, format_recall, model_option, window_option


@cli.command()
@tree_argument()
@click.option(
    "--query",
    default=None,
    help="Show the focus this question gets: what a chat answer would read (loads the model).",
)
@click.option(
    "--png",
    "png",
    default=None,
    type=click.Path(dir_okay=False),
    help="Draw the focus to this PNG: an overview of the whole tree by level of detail, the "
    "segments, and a zoomed panel for each span read in full detail (loads the model).",
)
@click.option(
    "--segments", "max_segments", default=20, show_default=True, help="Newest segments to list."
)
@model_option
@window_option
@storage_options_option
def show(tree, query, png, max_segments, model, window, storage_options):
    """The tree (levels, sizes, segments) and, with --query or --png, its focus.

    The focus is what a chat session on TREE reads: with --query, the focus that question gets
    (the answer itself is not written); without, the focus a session opens with. The text and
    the PNG are drawn from the same data (mcruntime.picture).
    """
    import mcstore
    from mcruntime import InputError
    from mcruntime.picture import plural

    if query is not None and not query.strip():
        raise InputError("the question given to --query is empty", kind="empty")
    if png is not None and not Path(png).resolve().parent.is_dir():
        raise click.BadParameter(f"no folder {str(Path(png).parent)!r} to write it in",
                                 param_hint="'--png'")  # fmt: skip
    t = mcstore.open(tree, "r", storage_options=storage_options or None)
    click.echo(f"{tree}: {plural(t.length, 'token')}, version {t.version}, "
               f"{plural(t.num_levels, 'level')}")  # fmt: skip
    for level in range(1, t.num_levels):
        click.echo(
            f"  level {level}: {plural(t.num_nodes(level), 'gist')}, one per {t.block**level} tokens"
        )
    segs = t.segments()
    click.echo(f"segments: {len(segs)}")
    hidden = max(0, len(segs) - max(0, max_segments))
    if hidden:
        click.echo(f"  … {plural(hidden, 'older segment')} (--segments {len(segs)} lists all)")
    for seg in segs[hidden:]:
        click.echo(f"  {seg.start:>10}-{seg.stop:<10} {seg.source}")
    if query is None and png is None:
        click.echo("focus: add --query QUESTION or --png FILE to see what a session reads")
        return
    from mcruntime import Session

    with Session(t, model=model, window=window, mode="r") as s:
        if query is not None:
            pic = s.ask(query, max_new_tokens=1, remember=False).answer.picture
        else:
            pic = s.focus_picture()
    click.echo(format_picture(pic))
    if png:
        from cli.focus_png import save_picture

        save_picture(pic, png, title=str(tree))
        click.echo(f"wrote {png}")


def format_picture(pic) -> str:
    """The focus summary and its spans, as `mc show` prints them."""
    from mcruntime.picture import plural

    kinds = ", ".join(
        plural(n, "raw token") if lv == 0 else f"{plural(n, 'gist')} at level {lv}"
        for lv, n in pic.levels.items()
    )
    budget = f" of {pic.budget}" if pic.budget is not None else ""
    head = f"focus: {pic.cost}{budget} positions for {plural(pic.length, 'token')} ({kinds})"
    lines = [head]
    if pic.query is not None:
        lines.append(format_recall([dataclasses.asdict(p) for p in pic.recall]))
    lines.append(format_focus(pic.report()))
    return "\n".join(lines)


@cli.command()
@tree_argument()
@click.option("--gistnet", default=None, help="GistNet checkpoint (default: the shipped one).")
@model_option
@storage_options_option
def regist(tree, gistnet, model, storage_options):
    """Recompute every gist of TREE with the current GistNet, level by level; resumable."""
    from tqdm import tqdm

    import mcmodels
    import mcstore
    from cli.model_cmds import trained_gistnet
    from mcruntime.binding import check_binding, gister_id, gistnet_binding
    from mcruntime.streaming import Gister

    t = mcstore.open(tree, "a", storage_options=storage_options or None)
    base = mcmodels.load_base(model)
    g = trained_gistnet(base, gistnet)
    binding = gistnet_binding(base, g, t.dtype)
    if (t.binding or {}).get("retrieval"):  # the kind of retrieval keys stays the tree's
        binding["retrieval"] = t.binding["retrieval"]
    if check_binding(t, binding):
        click.echo(f"{tree} is already gisted by {binding['gistnet']['id']}; nothing to do")
        return
    bars: dict[int, tqdm] = {}

    def progress(level: int, done: int, total: int) -> None:
        bar = bars.get(level)
        if bar is None:
            bar = bars[level] = progress_bar(total=total, desc=f"level {level}", unit="gist")
        bar.update(done - bar.n)

    v = t.regist(
        Gister.for_tree(base, g, t), binding, gister_id=gister_id(binding), progress=progress
    )
    for bar in bars.values():
        bar.close()
    click.echo(f"{tree}: gists recomputed by {binding['gistnet']['id']}; now at version {v}")
