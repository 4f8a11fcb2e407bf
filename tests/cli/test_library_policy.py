"""No policy in the CLI (issue 12, item 6): what `mc show`, `mc demo`, `mc eval recovered` and
the GistNet choice decide lives in the library, and the CLI calls it."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import mcmodels
import mcstore
from mcmodels.evaluate import eval_windows
from mcruntime.demo import DEMO_SOURCES, JOURNAL_SOURCE, clear_demo_tree
from mcruntime.errors import PathTaken
from tests.cli.helpers import TINY, run_mc

LINE = re.compile(r"^\s+tokens\s+(\d+)-(\d+)\s+(\S.*)$")


def _zeros(level, kids):
    return np.zeros((len(kids), 8))


def test_show_without_query_is_the_focus_a_session_opens_with(tree):
    """`mc show --png` draws the session's own opening focus (no budget re-derived in the CLI)."""
    from cli.show import format_picture
    from mcruntime import Session

    r = run_mc(["show", tree, "--png", str(tree) + ".png", *TINY])
    assert r.code == 0, r.err
    with Session(tree, model="tiny", mode="r") as s:
        want = format_picture(s.focus_picture())
        budget = s.focus.config.budget
    assert want in r.out
    assert f"of {budget} positions" in r.out


def test_pick_gistnet_one_place():
    base = mcmodels.tiny_base(0)
    with pytest.raises(mcmodels.CheckpointError):
        mcmodels.pick_gistnet(base)  # nothing ships for the tiny model: training needs one
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = mcmodels.pick_gistnet(base, untrained_ok=True)
    after = torch.rand(1)
    assert torch.equal(before, after)  # the caller's RNG is untouched
    b = mcmodels.pick_gistnet(base, untrained_ok=True)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)  # the same fixed untrained network every time
    assert mcmodels.pick_gistnet(base, a) is a


def test_clear_demo_tree(tmp_path):
    url = str(tmp_path / "demo.mc")
    assert clear_demo_tree(url) is False  # nothing there
    t = mcstore.create(url, dim=8)
    t.append(np.arange(64, dtype=np.int32), gister=_zeros, source=JOURNAL_SOURCE)
    t.append(np.arange(8, dtype=np.int32), gister=_zeros, source="chat:user")
    assert {s.source for s in t.segments()} <= DEMO_SOURCES
    assert clear_demo_tree(url) is True
    assert not (tmp_path / "demo.mc").exists()
    # a file, a folder of other files, a tree with other memory: refused, untouched
    f = tmp_path / "file.mc"
    f.write_text("mine")
    with pytest.raises(PathTaken, match="is a file"):
        clear_demo_tree(str(f))
    other = str(tmp_path / "other.mc")
    t = mcstore.create(other, dim=8)
    t.append(np.arange(40, dtype=np.int32), gister=_zeros, source="notes.md")
    with pytest.raises(PathTaken, match=r"notes\.md"):
        clear_demo_tree(other)
    assert mcstore.open(other).length == 40 and f.read_text() == "mine"


def test_demo_on_a_file_is_one_line(tmp_path):
    f = tmp_path / "demo.mc"
    f.write_text("mine")
    r = run_mc(["demo", "--tree", f, *TINY])
    assert r.code == 4 and "Traceback" not in r.err
    assert r.err.strip().startswith(f"mc: {f} is a file") and "--tree" in r.err
    assert f.read_text() == "mine"


class _Corpus:
    def __init__(self, lengths):
        self.lengths = lengths

    def tokens(self, tokenizer, split, *, min_tokens=0):
        return [(f"d{i}", np.arange(n, dtype=np.int32)) for i, n in enumerate(self.lengths)
                if n >= min_tokens]  # fmt: skip


def test_eval_windows_prefers_long_documents():
    base = mcmodels.tiny_base(0)
    kw = dict(span=64, recent=16, horizon=16, n_windows=2, per_doc=1, min_doc_tokens=1000)
    windows, used = eval_windows(base, _Corpus([200, 1500, 1200, 300]), **kw)
    assert used == 1000 and len(windows) == 2
    assert {name for name, _ in windows} == {"d1", "d2"}
    # too few long ones: any document that holds a window
    windows, used = eval_windows(base, _Corpus([200, 1500, 300]), **kw)
    assert used == 96 and len(windows) == 2
    with pytest.raises(mcmodels.CorpusError, match="96 tokens"):
        eval_windows(base, _Corpus([50]), **kw)
