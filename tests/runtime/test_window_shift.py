"""A refocus that moves unchanged entries keeps their cached keys and values, rotated to their
new positions (``Window(shift=True)``, ``mcmodels.kvcache.KeyShift``).

Exact where it can be: the first layer's keys and values depend only on a position's own vector
and position, so a one-layer model gives the same logits with moved positions as with
recomputed ones, for any sequence of edits (a hypothesis state machine drives the edits). Deeper
models differ only in what moved positions attended to; the answers' effect is measured on the
memory benchmark (docs/memory.md)."""

from __future__ import annotations

import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import mcmodels
from mcmodels.kvcache import KeyShift
from mcruntime import Session, SessionConfig
from mcruntime.window import Window, repeated_runs, unchanged_runs
from tests.runtime.text import prose


def _one_layer():
    """A one-layer tiny model whose attention is sharp (random init attends almost uniformly,
    which would hide a key moved to the wrong position)."""
    base = mcmodels.tiny_base(1, n_layers=1)
    attn = base.model.model.layers[0].self_attn
    with torch.no_grad():
        attn.q_proj.weight.mul_(12.0)
        attn.k_proj.weight.mul_(12.0)
    return base


ONE_LAYER = _one_layer()


def _rows(n: int, seed: int, d: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_moved_keys_equal_keys_computed_at_the_new_positions(tiny):
    shift = tiny.key_shift()
    x = _rows(20, 0, tiny.d_model)[None]
    at0 = tiny.forward(x, torch.arange(0, 20)[None]).cache.layers[0]
    at7 = tiny.forward(x, torch.arange(7, 27)[None]).cache.layers[0]
    assert not torch.allclose(at0.keys, at7.keys, atol=1e-3)  # positions do change keys
    torch.testing.assert_close(shift(at0.keys, 7), at7.keys, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shift(at7.keys, -7), at0.keys, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shift(shift(at0.keys, 3), 4), at7.keys, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(at0.values, at7.values)  # values carry no position


def test_a_scaled_or_length_dependent_rope_is_not_moved():
    """Dynamic RoPE changes its frequencies with the length, so a shift would not compose."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1,
                      rope_scaling={"rope_type": "dynamic", "factor": 2.0})  # fmt: skip
    assert KeyShift.of(LlamaForCausalLM(cfg)) is None
    assert KeyShift.of(torch.nn.Linear(2, 2)) is None  # no rotary embedding at all


def test_unchanged_runs_find_moved_rows_in_order():
    a, b, c = _rows(30, 1, 8), _rows(1, 2, 8), _rows(12, 3, 8)
    old = torch.cat([a[:10], a[10:20], c])  # 10 rows, then 10 that become one, then c
    new = torch.cat([a[:10], b, c])
    assert unchanged_runs(old, new) == [(0, 0, 10), (20, 11, 12)]
    assert unchanged_runs(old, new, min_run=11) == [(20, 11, 12)]


def test_an_expand_computes_only_the_new_rows_and_gives_the_same_logits():
    d = ONE_LAYER.d_model
    rows = [_rows(1, 100 + i, d)[0] for i in range(40)]
    moved, plain = Window(ONE_LAYER, [1, 2, 3], shift=True), Window(ONE_LAYER, [1, 2, 3])
    for w in (moved, plain):
        w.set_from(3, torch.stack(rows))
        w.logits()
    rows[5:6] = [_rows(1, 999 + i, d)[0] for i in range(6)]  # row 5 becomes six rows
    before = (moved.recomputed, plain.recomputed)
    for w in (moved, plain):
        w.set_from(3 + 5, torch.stack(rows[5:]))
    torch.testing.assert_close(moved.logits(), plain.logits(), atol=2e-4, rtol=1e-4)
    # the six new rows and the last one (whose logits are asked for); the 34 after the
    # expand are moved by five positions
    assert (moved.recomputed - before[0], plain.recomputed - before[1]) == (7, 40)


def test_repeated_runs_copy_from_before_the_first_target_only():
    a, b = _rows(30, 11, 8), _rows(10, 12, 8)
    rows = torch.cat([a, a[4:16], b, b, _rows(1, 13, 8)])  # 30 | 12 of a | b | b again | 1
    todo = list(range(30, len(rows)))
    # a[4:16] is found at 4; the second b repeats rows 42-51, which lie after the first
    # copy's target (30): computed with it, not before it, so it is not copied
    assert repeated_runs(rows, todo) == [(4, 30, 12)]
    assert repeated_runs(rows, list(range(42, len(rows)))) == [(42, 52, 10)]
    assert repeated_runs(rows, todo, min_run=13) == []
    assert repeated_runs(rows[:39], list(range(30, 39))) == [(4, 30, 8)]
    assert repeated_runs(rows[:38], list(range(30, 38))) == []  # the last row is never copied


def test_a_tail_that_repeats_the_window_computes_only_what_is_new():
    d = ONE_LAYER.d_model
    body, question = _rows(40, 21, d), _rows(3, 22, d)
    tail = torch.cat([body[10:30], question])  # a recalled passage, then the question
    copied = Window(ONE_LAYER, [1, 2, 3], shift=True, copy=True)
    plain = Window(ONE_LAYER, [1, 2, 3])
    for w in (copied, plain):
        w.set_from(3, body)
        w.logits()
        w.append(tail)
    torch.testing.assert_close(copied.logits(), plain.logits(), atol=2e-4, rtol=1e-4)
    assert (copied.recomputed, plain.recomputed) == (43 + 3, 43 + 23)
    cold = Window(ONE_LAYER, [1, 2, 3], shift=True, copy=True)  # all in the window's first call
    cold.set_from(3, torch.cat([body, tail]))
    torch.testing.assert_close(cold.logits(), plain.logits(), atol=2e-4, rtol=1e-4)
    assert cold.recomputed == 43 + 3


class MovedEqualsRecomputed(RuleBasedStateMachine):
    """Random expands, collapses, appends, repeats and cuts of a window's rows: with one layer,
    logits with moved (and copied) positions equal logits with everything after the first
    change recomputed, and moving (copying) computes no more positions than recomputing
    (moving)."""

    @initialize(n=st.integers(12, 60))
    def start(self, n):
        self.rows = [_rows(1, 100 + i, ONE_LAYER.d_model)[0] for i in range(n)]
        self.fresh = 1000
        self.moved = Window(ONE_LAYER, [1, 2, 3], shift=True)
        self.plain = Window(ONE_LAYER, [1, 2, 3])
        self.copied = Window(ONE_LAYER, [1, 2, 3], shift=True, copy=True)
        self.windows = (self.moved, self.plain, self.copied)
        self._apply(0)

    def _new(self, k):
        out = [_rows(1, self.fresh + i, ONE_LAYER.d_model)[0] for i in range(k)]
        self.fresh += k
        return out

    def _apply(self, start):
        for w in self.windows:
            w.set_from(w.prefix_len + start, torch.stack(self.rows[start:]))

    @rule(at=st.integers(0, 10_000), k=st.integers(2, 16))
    def expand(self, at, k):
        at %= len(self.rows)
        self.rows[at : at + 1] = self._new(k)
        self._apply(at)

    @rule(at=st.integers(0, 10_000), k=st.integers(2, 16))
    def collapse(self, at, k):
        if len(self.rows) > k + 1:
            at %= len(self.rows) - k
            self.rows[at : at + k] = self._new(1)
            self._apply(at)

    @rule(k=st.integers(1, 8))
    def append(self, k):
        new = self._new(k)
        self.rows += new
        for w in self.windows:
            w.append(torch.stack(new))

    @rule(at=st.integers(0, 10_000), k=st.integers(8, 20))
    def repeat(self, at, k):
        """Append a run of rows already in the window (a recalled passage) and a new row."""
        at %= len(self.rows)
        new = self.rows[at : at + k] + self._new(1)
        self.rows += new
        for w in self.windows:
            w.append(torch.stack(new))

    @rule()
    def step(self):
        before = [w.recomputed for w in self.windows]
        a, b, c = (w.logits() for w in self.windows)
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(c, b, atol=2e-4, rtol=1e-4)
        moved, plain, copied = (w.recomputed - n for w, n in zip(self.windows, before, strict=True))
        assert copied <= moved <= plain

    @invariant()
    def same_rows(self):
        assert self.moved.length == self.plain.length == self.copied.length == 3 + len(self.rows)


MovedEqualsRecomputed.TestCase.settings = settings(max_examples=25, stateful_step_count=12,
                                                   deadline=None, derandomize=True)  # fmt: skip
test_moved_positions_match_recomputed_ones_with_one_layer = MovedEqualsRecomputed.TestCase


def test_a_refocus_in_a_session_computes_only_what_changed(base, gistnet):
    """The same questions in two sessions, one moving unchanged positions: the same edits,
    fewer positions computed, and the window still equals the working context."""
    text = prose(3000, 7) + " The vault code is 4471. " + prose(3000, 8)
    got = {}
    for shift in (False, True):
        cfg = SessionConfig(window=512, memory_budget=256, reserve=160, shift_cache=shift)
        with Session(f"memory://shift-{shift}.mc", model=base, gistnet=gistnet, config=cfg) as s:
            s.ingest(text, "notes.md")
            s.window.logits()
            before = s.window.recomputed
            edits = [s.ask(q, 4, remember=False).answer.timings["focus_edits"]
                     for q in ("What is the vault code?", "What came after it?")]  # fmt: skip
            got[shift] = (edits, s.window.recomputed - before)
            want = torch.cat([s.window.vectors[: s.window.prefix_len], s.entries_vectors()])
            torch.testing.assert_close(s.window.vectors[: len(want)], want)
    assert got[True][0] == got[False][0] and sum(got[True][0]) > 0
    assert got[True][1] < got[False][1]


def _region_by_region(base, old: torch.Tensor, new: torch.Tensor, prefix: int) -> torch.Tensor:
    """The last logits of ``new`` the way a refocus computed them before the one-call
    version: the unchanged runs moved, each changed region in a model call of its own, in
    sequence order (each sees what precedes it)."""
    shift = base.key_shift()
    out = base.forward(old[None], torch.arange(len(old))[None])
    cache = out.cache
    runs = [(prefix + i, prefix + j, n) for i, j, n in unchanged_runs(old[prefix:], new[prefix:-1])]
    taken = [(j, cache.take(i, i + n), n, j - i) for i, j, n in runs]
    base.crop_cache(cache, prefix)
    at = prefix
    for j, kv, n, delta in taken:
        if j > at:
            base.forward(new[at:j][None], torch.arange(at, j)[None], cache=cache)
        cache.put(kv, lambda k, d=delta: shift(k, d))
        at = j + n
    out = base.forward(new[at:][None], torch.arange(at, len(new))[None], cache=cache, last_k=1)
    return out.logits[0, -1], cache


def test_one_call_computes_what_a_call_per_changed_region_computes(tiny):
    """Two layers, so what moved positions attended to matters: the masked single call must
    give each changed position the same view (and the cache the same order) as the calls
    made region by region."""
    d = tiny.d_model
    old = _rows(60, 7, d)
    new = torch.cat([old[:10], _rows(3, 8, d), old[11:30], _rows(5, 9, d), old[30:55],
                     _rows(2, 10, d)])  # fmt: skip
    want, ref_cache = _region_by_region(tiny, old, new, prefix=4)
    w = Window(tiny, [1, 2, 3, 4], shift=True)
    w.set_from(4, old[4:])
    w.vectors[:4] = old[:4]
    w.logits()
    w.set_from(4, new[4:])
    got = w.logits()
    torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=1e-5)
    for la, lb in zip(w.cache.layers, ref_cache.layers, strict=True):
        torch.testing.assert_close(la.keys, lb.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(la.values, lb.values, atol=1e-5, rtol=1e-5)
    # the first fill, then rows 4-9 (a run under MIN_RUN) and the new rows
    assert w.recomputed == len(old) + 6 + 3 + 5 + 2
