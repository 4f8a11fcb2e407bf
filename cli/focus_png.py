"""The PNG of `mc show --png`: a ``FocusPicture`` (mcruntime.picture) drawn with matplotlib.

An overview strip of the whole timeline coloured by level of detail (detailed spans at least a
few pixels wide, numbered, recalled passages in red), the segments below it named where the
name fits, and a zoomed panel for each group of detailed spans and for the recent tail. Every
element is drawn from the picture's data and tagged with a gid, so tests read back what was
drawn and compare it with the text listing.
"""

from __future__ import annotations

DPI = 110
_WIDTH_IN = 12.0
_RAW = "#1b1b1b"
_LEVELS = ["#2f6db5", "#58a55c", "#e3a33b", "#c8553d", "#8e6bb8", "#8c8c8c"]
_HIT = "#d62728"
_ZOOM = "#ff7f0e"


def level_colour(level: int) -> str:
    return _RAW if level == 0 else _LEVELS[min(level - 1, len(_LEVELS) - 1)]


def fit_label(name: str, px: float, fontsize: float = 7.0) -> str | None:
    """``name`` as it fits in ``px`` pixels (cut from the left with "…"), or None if too narrow."""
    char = 0.6 * fontsize * DPI / 72
    room = int((px - 6) / char)
    if len(name) <= room:
        return name
    if room >= 6:
        return "…" + name[-(room - 1) :]
    return None


def render_picture(pic, *, title: str = ""):
    """A matplotlib figure of a ``FocusPicture``: overview strip (level of detail over the whole
    timeline, zoomed spans numbered, recall hits in red), segment strip with the names that fit,
    and one zoomed panel per group of detailed spans and one for the recent tail.

    Every drawn element carries a gid ("run-L<level>", "detail", "hit", "segment", and
    "zoom-<n>[-<m>…]" for the panel numbers on the overview) so tests can read back what was
    drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mcruntime.picture import short_names, zooms

    panels, unzoomed = zooms(pic)
    ncol = min(3, max(1, len(panels)))
    nrow = -(-len(panels) // ncol) if panels else 0
    head, over, seg_h, legend, row_h = 0.75, 0.75, 0.4, 0.55, 1.45
    height = head + 0.3 + over + seg_h + legend + nrow * row_h + 0.2
    fig = plt.figure(figsize=(_WIDTH_IN, height))
    left, right = 0.5 / _WIDTH_IN, 1 - 0.3 / _WIDTH_IN

    def box(top_in: float, h_in: float, x0: float = left, x1: float = right):
        return fig.add_axes((x0, 1 - (top_in + h_in) / height, x1 - x0, h_in / height))

    n = max(1, pic.length)
    names = short_names([s.source for s in pic.segments])
    _draw_title(fig, pic, title, left, height)

    # overview: the whole timeline by level of detail
    px_per_token = (right - left) * _WIDTH_IN * DPI / n
    _draw_overview(box(head + 0.3, over), pic, panels, n, px_per_token)

    # segments, named where the name fits
    axs = box(head + 0.3 + over, seg_h)
    named = _draw_segments(axs, pic.segments, names, 0, n, px_per_token, fontsize=7)
    axs.tick_params(labelsize=7)
    axs.set_xlabel("token position", fontsize=7, labelpad=1)
    below = head + 0.3 + over + seg_h
    _draw_legend(fig, pic, named, unzoomed, (left, right), below / height, height)

    # zoomed panels
    top0 = head + 0.3 + over + seg_h + legend
    gapx = 0.35 / _WIDTH_IN
    width = (right - left - gapx * (ncol - 1)) / ncol
    for i, z in enumerate(panels):
        r, c = divmod(i, ncol)
        x0 = left + c * (width + gapx)
        axz = box(top0 + r * row_h + 0.25, row_h - 0.65, x0, x0 + width)
        _draw_zoom(axz, pic, z, names, width * _WIDTH_IN * DPI)
    return fig


def _draw_title(fig, pic, title: str, left: float, height: float) -> None:
    from mcruntime.picture import plural

    levels_txt = ", ".join(
        plural(c, "raw token") if lv == 0 else f"{c} level-{lv}" for lv, c in pic.levels.items()
    )
    budget = f" of {pic.budget}" if pic.budget is not None else ""
    fig.text(left, 1 - 0.22 / height, f"{title}: {plural(pic.length, 'token')}, focus "
             f"{pic.cost}{budget} positions ({levels_txt})", fontsize=10, weight="bold")  # fmt: skip
    sub = (
        f"query: {pic.query[:110]!r} · {plural(len(pic.recall), 'recalled passage')} (red)"
        if pic.query is not None
        else "the focus a session opens with (no query)"
    )
    fig.text(left, 1 - 0.46 / height, sub, fontsize=8.5)


def _draw_overview(ax, pic, panels, n: int, px_per_token: float) -> None:
    """The whole timeline by level of detail, detailed spans and recall hits on top, and the
    numbers of the zoomed panels above it."""
    from matplotlib.patches import Rectangle

    _draw_runs(ax, pic.runs, 0, n)
    min_w = 3 / px_per_token  # a detailed span is at least 3 px wide, whatever its length
    for sp in pic.detail:
        w = max(sp.stop - sp.start, min_w)
        ax.add_patch(Rectangle((sp.start, 0), w, 1, color=_RAW, gid="detail", lw=0))
    for p in pic.recall:  # a red bar on top of the strip over each recalled passage
        w = max(p.stop - p.start, min_w)
        ax.add_patch(Rectangle((p.start, 1.0), w, 0.14, color=_HIT, gid="hit", lw=0, clip_on=False))
    marks: list[list] = []  # [centre, numbers]: panels closer than 18 px share one label
    for z in panels:
        mid = (z.start + z.stop) / 2
        if marks and (mid - marks[-1][0]) * px_per_token < 18:
            marks[-1][1].append(z.number)
        else:
            marks.append([mid, [z.number]])
    for mid, numbers in marks:
        ax.annotate(",".join(map(str, numbers)), (mid, 1), xytext=(mid, 1.35), ha="center",
                    va="bottom", fontsize=8, color=_ZOOM, weight="bold",
                    gid="zoom-" + "-".join(map(str, numbers)),
                    arrowprops={"arrowstyle": "-", "color": _ZOOM, "lw": 1})  # fmt: skip
    ax.set_xlim(0, n)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.tick_params(labelbottom=False, length=2)


def _draw_legend(fig, pic, named: int, unzoomed, x: tuple, below: float, height: float):
    """The colours' legend under the strips (``below``: their bottom, as a fraction of the
    figure), and a note on what the picture leaves out."""
    from matplotlib.patches import Patch

    from mcruntime.picture import plural

    left, right = x
    handles = [Patch(color=level_colour(lv), label="raw" if lv == 0 else f"level {lv}")
               for lv in pic.levels]  # fmt: skip
    if pic.recall:
        handles.append(Patch(color=_HIT, label="recalled passage"))
    note = ""
    if named < len(pic.segments):
        note = f"{named} of {len(pic.segments)} segments named (the others are too narrow here)"
    if unzoomed:
        note += ("; " if note else "") + (
            f"{plural(len(unzoomed), 'more detailed span')} without a panel (see the listing)"
        )
    fig.legend(handles=handles, loc="upper left", ncol=len(handles), fontsize=7, frameon=False,
               bbox_to_anchor=(left, 1 - below - 0.12 / height))  # fmt: skip
    if note:
        fig.text(right, 1 - below - 0.3 / height, note, fontsize=7, ha="right", color="#555")


def _draw_runs(ax, runs, a: int, b: int, *, y=(0, 1)) -> None:
    by_level: dict[int, list] = {}
    for r in runs:
        s, e = max(r.start, a), min(r.stop, b)
        if e > s:
            by_level.setdefault(r.level, []).append((s, e - s))
    for level, bars in sorted(by_level.items()):
        ax.broken_barh(bars, (y[0], y[1] - y[0]), facecolors=level_colour(level), lw=0,
                       gid=f"run-L{level}")  # fmt: skip


def _draw_segments(ax, segs, names, a, b, px_per_token, *, fontsize, y=(0, 1)) -> int:
    """Alternating grey bars for the segments in [a, b), named where the name fits; returns
    how many were named."""
    named = 0
    for k, seg in enumerate(segs):
        s, e = max(seg.start, a), min(seg.stop, b)
        if e <= s:
            continue
        ax.broken_barh([(s, e - s)], (y[0], y[1] - y[0]), facecolors="#d9d9d9" if k % 2 else
                       "#bdbdbd", lw=0, gid="segment")  # fmt: skip
        label = fit_label(names.get(seg.source, seg.source), (e - s) * px_per_token, fontsize)
        if label:
            named += 1
            ax.text((s + e) / 2, (y[0] + y[1]) / 2, label, ha="center", va="center",
                    fontsize=fontsize, clip_on=True)  # fmt: skip
    ax.set_xlim(a, b)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    return named


def _draw_zoom(ax, pic, z, names, width_px: float) -> None:
    """One zoomed panel: a little context on each side, levels above, segments below."""
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    pad = max(2 * pic.block, (z.stop - z.start) // 4)
    a, b = max(0, z.start - pad), min(pic.length, z.stop + pad)
    _draw_runs(ax, pic.runs, a, b, y=(0.38, 1))
    _draw_segments(ax, pic.segments, names, a, b, width_px / max(1, b - a), fontsize=6.5,
                   y=(0, 0.34))  # fmt: skip
    for p in pic.recall:
        s, e = max(p.start, a), min(p.stop, b)
        if e > s:
            ax.add_patch(Rectangle((s, 0.36), e - s, 0.66, fill=False, ec=_HIT, lw=1.5,
                                   gid="hit", clip_on=False))  # fmt: skip
    spans = [pic.spans[k] for k in z.spans]
    srcs = list(dict.fromkeys(names.get(sp.source, sp.source or "?") for sp in spans))
    what = "read in full detail"
    if z.kind == "tail":
        detail = any(sp.kind == "detail" for sp in spans)
        what = "detail + recent tail" if detail else "recent tail (always raw)"
    src = srcs[0] if len(srcs) == 1 else f"{srcs[0]} +{len(srcs) - 1}"
    ax.set_title(f"{z.number} · {what} · {z.start}-{z.stop}\n{fit_label(src, width_px, 8) or ''}",
                 fontsize=8, loc="left", color=_ZOOM if z.kind == "detail" else "#333")  # fmt: skip
    ax.tick_params(labelsize=6.5, length=2)
    ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def save_picture(pic, path, *, title: str = "") -> None:
    """Render ``pic`` and write it to ``path`` as a PNG."""
    import matplotlib.pyplot as plt

    fig = render_picture(pic, title=title)
    try:
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
