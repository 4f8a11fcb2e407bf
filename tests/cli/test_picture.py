"""`mc show --png` tells the truth: the picture and the text come from one FocusPicture, and
what the figure draws (read back from its artists) is what the listing says."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from cli.focus_png import render_picture
from cli.show import format_picture
from mcruntime.picture import FocusPicture, Seg, plural, short_names, split_at, zooms
from tests.cli.helpers import TINY, multi_chunk_docs, run_mc

LINE = re.compile(r"^\s+tokens\s+(\d+)-(\d+)\s+(\S.*)$")


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory) -> str:
    """~12k tokens of the tiny model in six files: two gist levels, many segments."""
    root = tmp_path_factory.mktemp("pic")
    docs = multi_chunk_docs(root / "docs", files=6, chars=2000)
    url = str(root / "big.mc")
    r = run_mc(["ingest", url, docs, *TINY])
    assert r.code == 0, r.err
    return url


def _listing(text: str) -> list[tuple[int, int, str, str]]:
    """(start, stop, source, kind) of every span line of a focus listing."""
    out, kind = [], None
    for line in text.splitlines():
        if line.startswith("focus: "):
            kind = "detail"
        elif line.startswith("recent tail"):
            kind = "tail"
        elif line.startswith("recall:"):
            kind = None
        m = LINE.match(line)
        if m and kind:
            out.append((int(m[1]), int(m[2]), m[3], kind))
    return out


def _bars(fig, gid: str) -> list[tuple[float, float]]:
    """x extents of every bar drawn with this gid, in data units, in the first axes holding one."""
    for ax in fig.axes:
        got = []
        for c in ax.collections:
            if c.get_gid() == gid:
                for path in c.get_paths():
                    xs = path.vertices[:, 0]
                    got.append((float(xs.min()), float(xs.max())))
        for p in ax.patches:
            if p.get_gid() == gid:
                got.append((p.get_x(), p.get_x() + p.get_width()))
        if got:
            return sorted(got)
    return []


def _merge(bars):
    out: list[list[float]] = []
    for a, b in sorted(bars):
        if out and abs(out[-1][1] - a) < 1e-6:
            out[-1][1] = b
        else:
            out.append([a, b])
    return [tuple(x) for x in out]


def test_picture_data_splits_spans_at_segments_and_lists_the_tail():
    segs = [Seg(0, 100, "a.txt"), Seg(100, 300, "b.txt"), Seg(300, 400, "c.txt")]
    # level-1 gists of 32, a raw stretch 64-160 across a.txt|b.txt, raw tail from 352
    entries = [(1, 0), *((0, i) for i in range(32, 160)), (1, 5), (1, 6), (1, 7), (1, 8), (1, 9)]
    entries += [(1, 10)] + [(0, i) for i in range(352, 400)]
    pic = FocusPicture.of(entries, 400, raw_from=352, segments=segs, block=32)
    assert [(s.start, s.stop, s.source, s.kind) for s in pic.spans] == [
        (32, 100, "a.txt", "detail"),
        (100, 160, "b.txt", "detail"),
        (352, 400, "c.txt", "tail"),
    ]
    # the runs tile the timeline exactly, in order
    assert pic.runs[0].start == 0 and pic.runs[-1].stop == 400
    assert all(a.stop == b.start for a, b in zip(pic.runs, pic.runs[1:], strict=False))
    assert pic.levels == {0: 128 + 48, 1: 7} and pic.cost == len(entries)
    assert pic.level_at(50) == 0 and pic.level_at(200) == 1
    panels, left = zooms(pic, gap=64)
    assert [(z.start, z.stop, z.kind) for z in panels] == [(32, 160, "detail"), (352, 400, "tail")]
    assert left == []
    # detail close to the tail shares its panel
    assert [(z.start, z.stop, z.kind) for z in zooms(pic)[0]] == [(32, 400, "tail")]


def test_focus_summary_counts_in_words():
    pic = FocusPicture.of([(1, 0), (0, 32)], 33, raw_from=32, segments=[Seg(0, 33, "a")])
    head = format_picture(pic).splitlines()[0]
    assert head == "focus: 2 positions for 33 tokens (1 raw token, 1 gist at level 1)"


def test_split_at_and_names_and_plural():
    segs = [Seg(0, 10, "x"), Seg(10, 20, "y"), Seg(20, 30, "z")]
    assert split_at(5, 25, segs) == [(5, 10, "x"), (10, 20, "y"), (20, 25, "z")]
    assert split_at(12, 14, segs) == [(12, 14, "y")]
    names = short_names(["/usr/lib/py/json/a.py", "/usr/lib/py/json/b.py", "chat:user"])
    assert names["/usr/lib/py/json/a.py"] == "a.py" and names["chat:user"] == "chat:user"
    parts = short_names(["/d/x.log (tokens 0-9 of 20)", "/d/x.log (tokens 9-20 of 20)", "/d/y"])
    assert list(parts.values()) == ["x.log", "x.log", "y"]
    assert plural(1, "gist") == "1 gist" and plural(2, "gist") == "2 gists"


def test_many_spans_get_at_most_six_panels_and_the_rest_are_counted():
    segs = [Seg(0, 32 * 400, "doc")]
    entries, detail = [], 0
    for i in range(399):  # every 20th block raw: 20 separate detail spans
        if i % 20 == 0:
            entries += [(0, t) for t in range(i * 32, (i + 1) * 32)]
            detail += 1
        else:
            entries.append((1, i))
    entries += [(0, t) for t in range(399 * 32, 400 * 32)]
    pic = FocusPicture.of(entries, 400 * 32, raw_from=399 * 32, segments=segs)
    panels, left = zooms(pic)
    assert len(panels) == 6 and panels[-1].kind == "tail"
    assert len(left) == detail - 5  # the listing still has every span
    assert len(pic.detail) == detail


def test_png_draws_what_the_listing_says(big_tree, tmp_path):
    """Session focus for a question -> listing text and figure; read both back and compare."""
    from mcruntime import Session

    with Session(big_tree, model="tiny", mode="r") as s:
        turn = s.ask("What is the value of item 2-7?", max_new_tokens=1, remember=False)
        pic = turn.answer.picture
        assert turn.answer.focus == pic.report()  # Answer.focus is the picture's spans
    text = format_picture(pic)
    listed = _listing(text)
    assert listed == [(p.start, p.stop, p.source, p.kind) for p in pic.spans]
    assert any(k == "tail" for *_, k in listed)  # the raw tail is listed, not left out
    fig = render_picture(pic, title="big.mc")
    # overview: per level, the drawn bars are exactly the runs of that level
    for level in pic.levels:
        want = _merge((r.start, r.stop) for r in pic.runs if r.level == level)
        assert _merge(_bars(fig, f"run-L{level}")) == want, level
    # every listed detail span is drawn raw on the overview (at least 3 px wide) …
    drawn = _bars(fig, "detail")
    assert len(drawn) == len(pic.detail)
    for (a, b), sp in zip(drawn, pic.detail, strict=True):
        assert a == sp.start and b >= sp.stop
        assert pic.level_at(sp.start) == 0
    # … and numbered: one zoom panel per group, the tail last
    panels, left = zooms(pic)
    gids = [t.get_gid() or "" for t in fig.texts + [x for ax in fig.axes for x in ax.texts]]
    numbers = sorted(int(k) for g in gids if g.startswith("zoom-") for k in g[5:].split("-"))
    assert numbers == [z.number for z in panels] and not left
    assert len(fig.axes) == 2 + len(panels)  # overview, segments, panels
    covered = {k for z in panels for k in z.spans}
    assert covered == set(range(len(pic.spans)))
    # recall hits are marked
    assert len(_bars(fig, "hit")) >= len(pic.recall) > 0
    # the segment strip draws every segment
    assert len(_bars(fig, "segment")) == len(pic.segments)
    png = tmp_path / "p.png"
    fig.savefig(png, dpi=110)
    assert png.stat().st_size > 10_000


def test_mc_show_prints_the_same_spans(big_tree, tmp_path):
    from mcruntime import Session

    q = "What is the value of item 4-2?"
    png = tmp_path / "s.png"
    r = run_mc(["show", big_tree, "--query", q, "--png", png, *TINY])
    assert r.code == 0, r.err
    with Session(big_tree, model="tiny", mode="r") as s:
        turn = s.ask(q, max_new_tokens=1, remember=False)
        pic = turn.answer.picture
    assert _listing(r.out) == [(p.start, p.stop, p.source, p.kind) for p in pic.spans]
    assert f"wrote {png}" in r.out and png.stat().st_size > 10_000


def test_show_lists_how_many_segments_are_hidden(big_tree):
    r = run_mc(["show", big_tree, "--segments", "3"])
    assert r.code == 0, r.err
    n = int(re.search(r"segments: (\d+)", r.out)[1])
    assert f"… {n - 3} older segments (--segments {n} lists all)" in r.out
    assert len([x for x in r.out.splitlines() if re.match(r"^\s+\d+-\d+\s", x)]) == 3
    assert not re.search(r"(?<!\d)1 (gists|tokens|levels)", r.out) and " tokens, version" in r.out
    # no model loaded without --query/--png: the focus is one hint line
    assert "focus: add --query" in r.out


def test_segment_labels_fit_at_any_count(tmp_path):
    """300 segments: names drawn only where they fit; nothing drawn overlaps its bar."""
    segs = [Seg(i * 40, (i + 1) * 40, f"folder/file-{i:03d}.txt") for i in range(300)]
    entries = [(0, t) for t in range(300 * 40)]
    pic = FocusPicture.of(entries, 300 * 40, raw_from=300 * 40 - 128, segments=segs, block=32)
    fig = render_picture(pic, title="t")
    fig.canvas.draw()
    ax = fig.axes[1]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]
    for a, b in itertools.pairwise(boxes):
        assert a.x1 <= b.x0 + 0.5  # labels never overlap
    assert np.all([bx.width > 0 for bx in boxes])


def test_png_pixels_match_the_listing(big_tree, tmp_path):
    """Read the written PNG back: at every listed span the overview strip is raw-coloured, and
    every run of the focus (wide enough to hold a pixel) shows its level's colour."""
    import matplotlib.colors as mcolors
    import matplotlib.image as mimage

    from cli.focus_png import DPI, level_colour
    from mcruntime import Session

    with Session(big_tree, model="tiny", mode="r") as s:
        turn = s.ask("What is the value of item 5-3?", max_new_tokens=1, remember=False)
        pic = turn.answer.picture
    fig = render_picture(pic, title="big.mc")
    fig.set_dpi(DPI)
    png = tmp_path / "px.png"
    fig.savefig(png, dpi=DPI)
    img = mimage.imread(png)[..., :3]
    height = img.shape[0]
    ax = fig.axes[0]  # the overview strip
    y_mid = ax.transData.transform((0, 0.5))[1]

    def colour_at(x_data: float) -> np.ndarray:
        x, _ = ax.transData.transform((x_data, 0.5))
        return img[round(height - y_mid), round(x)]

    def near(rgb, name) -> bool:
        return bool(np.abs(rgb - np.array(mcolors.to_rgb(name))).max() < 0.08)

    for sp in _listing(format_picture(pic)):
        assert near(colour_at((sp[0] + sp[1]) / 2), level_colour(0)), sp
    px = ax.transData.transform((1, 0))[0] - ax.transData.transform((0, 0))[0]
    checked = 0
    for r in pic.runs:
        if (r.stop - r.start) * px >= 4:
            assert near(colour_at((r.start + r.stop) / 2), level_colour(r.level)), r
            checked += 1
    assert checked >= 3
