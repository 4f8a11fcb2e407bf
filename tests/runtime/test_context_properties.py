"""Invariants of the working context and the focus allocator, as hypothesis properties.

The six invariants of ``docs/architecture.md#invariants`` are checked after every operation of a
state machine that grows the timeline, commits, assembles, expands, collapses and refocuses with
random scores.
A small block size (4) reaches deep trees with few tokens; 32 checks the real geometry.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mcruntime.context import ContextError, WorkingContext, min_cost, span
from mcruntime.focus import Focus, FocusConfig


def counts(committed: int, block: int):
    def num_nodes(level: int) -> int:
        return committed // block**level if level > 0 else committed

    return num_nodes


def replay(before: WorkingContext, ops, num_nodes) -> list:
    """Apply the recorded ops one by one with the elementary edits (invariant 6)."""
    wc = before.copy()
    for op, node in ops:
        if op == "expand":
            pos = wc.position_of(node)
            assert pos is not None, f"expanded {node} was not an entry"
            wc.expand(pos)
        else:
            level, index = node
            first = (level - 1, index * wc.block)
            pos = wc.position_of(first)
            assert pos is not None, f"collapsed {node} but its first child was not an entry"
            wc.collapse(pos, num_nodes)
    return wc.entries


@given(
    block=st.sampled_from([2, 4, 32]),
    committed=st.integers(0, 5000),
    pending=st.integers(0, 40),
    raw_recent=st.integers(0, 64),
)
def test_canonical_is_coarsest_and_legal(block, committed, pending, raw_recent):
    num_nodes = counts(committed, block)
    length = committed + pending
    raw_from = min((max(0, length - raw_recent) // block) * block, (committed // block) * block)
    wc = WorkingContext.canonical(length, num_nodes, raw_from=raw_from, block=block)
    wc.check(num_nodes, raw_recent=raw_recent)
    # coarsest: at most block-1 entries per level below the top, and no complete group remains
    levels = [lvl for lvl, _ in wc.entries if lvl > 0]
    for lvl in set(levels):
        if num_nodes(lvl + 1) > 0:
            assert levels.count(lvl) <= block - 1
    for _, parent in wc.sibling_groups():
        _, e = span(parent, block)
        assert parent[0] == 1 or e > raw_from or parent[1] >= num_nodes(parent[0]), parent
    assert wc.cost == min_cost(length, committed, raw_recent, num_nodes, block)


@given(block=st.sampled_from([4, 32]), n=st.integers(1, 10**7))
@settings(max_examples=50)
def test_coarsest_covering_is_small_for_huge_histories(block, n):
    wc = WorkingContext.canonical(n, counts(n, block), raw_from=n - n % block, block=block)
    top = max((lvl for lvl, _ in wc.entries), default=0)
    assert wc.cost <= (block - 1) * (top + 1) + block


class FocusMachine(RuleBasedStateMachine):
    @initialize(
        block=st.sampled_from([4, 32]),
        budget=st.integers(40, 400),
        raw_recent=st.integers(0, 24),
        first=st.integers(0, 3000),
        max_expands=st.integers(1, 6),
        cooldown=st.integers(0, 3),
    )
    def setup(self, block, budget, raw_recent, first, max_expands, cooldown):
        self.block = block
        self.committed = first
        self.cfg = FocusConfig(
            budget=budget, raw_recent=raw_recent, max_expands=max_expands, cooldown=cooldown
        )
        nn = counts(first, block)
        assume(min_cost(first, first, raw_recent, nn, block) <= budget)
        self.focus = Focus.assemble(first, nn, self.cfg, block=block)

    @property
    def num_nodes(self):
        return counts(self.committed, self.block)

    @property
    def wc(self) -> WorkingContext:
        return self.focus.wc

    @invariant()
    def legal(self):
        if hasattr(self, "focus"):
            self.wc.check(self.num_nodes, budget=self.cfg.budget, raw_recent=self.cfg.raw_recent)

    @rule(n=st.integers(1, 300), seed=st.integers(0, 2**16))
    def grow(self, n, seed):
        pending = self.wc.length - self.committed
        nn = counts(self.committed, self.block)
        need = min_cost(self.wc.length + n, self.committed, self.cfg.raw_recent, nn, self.block)
        total = self.wc.length + n
        if min_cost(total, total, self.cfg.raw_recent, counts(total, self.block), self.block) > (
            self.cfg.budget
        ):
            return  # even committed, this history would not fit: sessions refuse such windows
        before = self.wc.copy()
        scores = np.random.default_rng(seed).normal(size=self.wc.cost)
        if need > self.cfg.budget:
            # too many uncommitted tokens to fit: the allocator must refuse, changing nothing
            # that matters (the timeline grew; it may have collapsed what it could)
            with pytest.raises(ContextError):
                self.focus.grow(n, scores)
            self.committed = self.wc.length  # the session would commit here
            self.focus.on_commit(self.num_nodes)
            self.focus.make_room()
            return
        edits = self.focus.grow(n, scores)
        grown = before.copy()
        grown.extend(n)
        assert replay(grown, edits.ops, nn) == self.wc.entries
        assert pending + n == self.wc.length - self.committed

    @rule()
    def commit(self):
        self.committed = self.wc.length
        self.focus.on_commit(self.num_nodes)

    @precondition(lambda self: hasattr(self, "focus") and self.wc.cost > 0)
    @rule(data=st.data())
    def expand_one(self, data):
        pos = data.draw(st.integers(0, self.wc.cost - 1))
        before = self.wc.copy()
        level, index = self.wc.entries[pos]
        if level == 0:
            with pytest.raises(ContextError):
                self.wc.expand(pos)
            assert self.wc.entries == before.entries
            return
        if self.wc.cost + self.block - 1 > self.cfg.budget:
            return
        self.wc.expand(pos)
        b = self.block
        assert self.wc.entries[pos : pos + b] == [(level - 1, index * b + k) for k in range(b)]
        assert self.wc.entries[:pos] == before.entries[:pos]
        assert self.wc.entries[pos + b :] == before.entries[pos + 1 :]
        # a manual expand may put detail into the raw region's past only; it is always legal

    @precondition(lambda self: hasattr(self, "focus"))
    @rule(data=st.data())
    def collapse_one(self, data):
        groups = list(self.wc.sibling_groups())
        if not groups:
            return
        pos, parent = data.draw(st.sampled_from(groups))
        before = self.wc.copy()
        _, e = span(parent, self.block)
        legal = parent[1] < self.num_nodes(parent[0])
        if not legal:
            with pytest.raises(ContextError):
                self.wc.collapse(pos, self.num_nodes)
            assert self.wc.entries == before.entries
            return
        if e > self.wc.raw_floor(self.cfg.raw_recent):
            return  # the allocator never does this; the raw region must stay raw
        self.wc.collapse(pos, self.num_nodes)
        assert (
            self.wc.entries == before.entries[:pos] + [parent] + before.entries[pos + self.block :]
        )

    @precondition(lambda self: hasattr(self, "focus"))
    @rule(seed=st.integers(0, 2**16), scale=st.sampled_from([0.1, 1.0, 5.0]))
    def refocus(self, seed, scale):
        scores = np.random.default_rng(seed).normal(scale=scale, size=self.wc.cost)
        before = self.wc.copy()
        edits = self.focus.refocus(scores)
        assert len(edits.expanded) <= self.cfg.max_expands
        assert replay(before, edits.ops, self.num_nodes) == self.wc.entries
        # every expand that needed room was paid for by strictly cheaper collapses
        score_of = dict(zip(before.entries, scores, strict=True))
        for node in edits.expanded:
            if node in score_of:
                assert score_of[node] > self.cfg.tau_expand

    @precondition(lambda self: hasattr(self, "focus"))
    @rule()
    def reassemble(self):
        self.focus = Focus.assemble(self.wc.length, self.num_nodes, self.cfg, block=self.block)


TestFocusMachine = FocusMachine.TestCase
TestFocusMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_refocus_expands_the_wanted_node_and_pays_with_the_unwanted():
    block, n = 4, 4**5
    nn = counts(n, block)
    cfg = FocusConfig(budget=40, raw_recent=4, max_expands=1, cooldown=1, margin=0.0)
    focus = Focus.assemble(n, nn, cfg, block=block)
    wc = focus.wc
    target = next(e for e in wc.entries if e[0] == 3)
    scores = np.full(wc.cost, -1.0)
    scores[wc.position_of(target)] = 5.0
    edits = focus.refocus(scores)
    assert edits.expanded == [target]
    assert wc.position_of(target) is None
    wc.check(nn, budget=cfg.budget, raw_recent=cfg.raw_recent)
    # cooldown: collapsing straight back is not allowed on the next step
    scores = np.full(wc.cost, 1.0)
    first_child = wc.position_of((2, target[1] * block))
    scores[first_child : first_child + block] = -9.0
    focus.refocus(scores)
    assert wc.position_of(target) is None


def test_grow_keeps_budget_and_never_drops_history():
    block = 32
    nn = counts(0, block)
    cfg = FocusConfig(budget=300, raw_recent=64)
    focus = Focus.assemble(0, nn, cfg, block=block)
    committed = 0
    for _ in range(200):
        focus.grow(97)
        committed = focus.wc.length
        focus.on_commit(counts(committed, block))
        focus.wc.check(counts(committed, block), budget=cfg.budget, raw_recent=cfg.raw_recent)
    assert focus.wc.length == 200 * 97
    assert span(focus.wc.entries[0], block)[0] == 0
