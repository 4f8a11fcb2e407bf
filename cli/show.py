"""`mc show`, `mc regist`, `mc bench`: looking at a tree, updating its gists, measuring."""

from __future__ import annotations

import sys

import click

from cli.main import cli
from cli.options import progress_bar, storage_options_option, tree_url
from cli.run_cmds import format_focus, model_option, window_option

_COLOURS = ["#1b1b1b", "#2f6db5", "#58a55c", "#e3a33b", "#c8553d", "#8e6bb8", "#8c8c8c"]


@cli.command()
@click.argument("tree")
@click.option(
    "--query", default=None, help="Show the focus a question would get (loads the model)."
)
@click.option(
    "--png",
    "png",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also draw the timeline strip to this PNG.",
)
@click.option("--segments", "max_segments", default=20, show_default=True, help="Segments to list.")
@model_option
@window_option
@storage_options_option
def show(tree, query, png, max_segments, model, window, storage_options):
    """The tree (levels, sizes, segments) and a focus over it, as text and optionally a PNG.

    Without --query the focus is assembled like a session's opening one (recent detail, older
    gists) but without loading the model, so its budget is estimated (window - 300);
    with --query it is what the retrieval assist and scorer make of that question.
    """
    import mcstore
    from mcruntime.context import min_cost
    from mcruntime.focus import Focus, FocusConfig

    t = mcstore.open(tree_url(tree), "r", storage_options=storage_options or None)
    click.echo(f"{tree}: {t.length} tokens, version {t.version}, {t.num_levels} levels")
    for level in range(1, t.num_levels):
        click.echo(f"  level {level}: {t.num_nodes(level)} gists, one per {t.block**level} tokens")
    segs = t.segments()
    click.echo(f"segments: {len(segs)}")
    for seg in segs[-max_segments:]:
        click.echo(f"  {seg.start:>10}-{seg.stop:<10} {seg.source}")
    if query is not None:
        from mcruntime import Session

        s = Session(t, model=model, window=window, mode="r")
        s.ask(query, max_new_tokens=1, remember=False)
        wc, raw_recent, spans = s.focus.wc, s.focus.config.raw_recent, s.last.focus
    else:
        budget = window - 300
        raw_recent = min(128, budget // 4)
        if min_cost(t.length, t.length, raw_recent, t.num_nodes, t.block) > budget:
            from mcruntime import WindowError

            raise WindowError(
                f"a window of {window} cannot show the {t.length} tokens of {tree}; "
                "use a larger --window"
            )
        wc = Focus.assemble(
            t.length, t.num_nodes, FocusConfig(budget=budget, raw_recent=raw_recent), block=t.block
        ).wc
        spans = []
    levels = {}
    for level, _ in wc.entries:
        levels[level] = levels.get(level, 0) + 1
    click.echo(f"focus: {wc.cost} entries for {wc.length} tokens: " + ", ".join(
        f"{n} at level {lv}" for lv, n in sorted(levels.items())))  # fmt: skip
    if spans:
        click.echo(format_focus(spans))
    if png:
        draw_timeline(wc, segs, png, title=f"{tree} — {wc.length} tokens, {wc.cost} entries")
        click.echo(f"wrote {png}")


def draw_timeline(wc, segments, path: str, *, title: str = "") -> None:
    """A strip over the timeline coloured by the level of detail of the focus, segments below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, (ax, axs) = plt.subplots(2, 1, figsize=(11, 2.6), height_ratios=[3, 1], sharex=True)
    b = wc.block
    top = max((lv for lv, _ in wc.entries), default=0)
    runs: list[list] = []  # merge neighbouring entries of one level into one bar
    for level, index in wc.entries:
        s, e = index * b**level, (index + 1) * b**level
        if runs and runs[-1][0] == level and runs[-1][2] == s:
            runs[-1][2] = e
        else:
            runs.append([level, s, e])
    for level, s, e in runs:
        ax.broken_barh([(s, e - s)], (0, 1), facecolors=_COLOURS[min(level, len(_COLOURS) - 1)])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    ax.legend(
        handles=[Patch(color=_COLOURS[min(lv, 6)], label="raw" if lv == 0 else f"level {lv}") for lv in range(top + 1)],
        ncol=top + 1, fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.05), frameon=False,
    )  # fmt: skip
    for k, seg in enumerate(segments):
        axs.broken_barh(
            [(seg.start, seg.stop - seg.start)], (0, 1), facecolors="#ddd" if k % 2 else "#bbb"
        )
    if len(segments) <= 12:
        for seg in segments:
            axs.text(
                (seg.start + seg.stop) / 2,
                0.5,
                str(seg.source)[-24:],
                ha="center",
                va="center",
                fontsize=6,
            )
    axs.set_yticks([])
    axs.set_xlabel("token position")
    axs.set_xlim(0, max(1, wc.length))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@cli.command()
@click.argument("tree")
@click.option("--gistnet", default=None, help="GistNet checkpoint (default: the shipped one).")
@model_option
@storage_options_option
def regist(tree, gistnet, model, storage_options):
    """Recompute every gist of TREE with the current GistNet, level by level; resumable."""
    from tqdm import tqdm

    import mcmodels
    import mcstore
    from cli.model_cmds import pick_gistnet
    from mcruntime.binding import check_binding, gister_id, gistnet_binding
    from mcruntime.streaming import Gister

    t = mcstore.open(tree, "a", storage_options=storage_options or None)
    base = mcmodels.load_base(model)
    g = pick_gistnet(base, gistnet)
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


_BENCHES = (
    "store",
    "harness",
    "memory",
    "index",
    "systems",
    "footprint",
)  # bench.COMMANDS; bench is not imported
# until a benchmark runs, so `mc --help` works where bench/ is not on the path


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name", type=click.Choice(_BENCHES))
@click.pass_context
def bench(ctx, name):
    """Run a benchmark of bench/ (extra arguments go to it, e.g. `mc bench harness --quick`)."""
    import importlib

    try:
        from bench import COMMANDS

        mod = importlib.import_module(COMMANDS[name])
    except ImportError as e:
        raise click.ClickException(f"benchmark {name} is not available: {e}") from None
    sys.exit(mod.main(list(ctx.args)) or 0)
