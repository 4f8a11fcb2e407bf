"""Hypothesis state machine: random appends, reopen, time travel, tags, forks, gc, objects,
redactions and purges, checked against a plain in-memory model after every step."""

from __future__ import annotations

import shutil
import tempfile
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import mcstore
from tests.store.helpers import DIM, Model, check_tree, gister

B, E = 4, 64
SIZES = st.one_of(st.integers(1, 5), st.integers(6, 70), st.integers(100, 3 * E + 10))


class TreeMachine(RuleBasedStateMachine):
    # an S3 prefix and its storage options (set by the S3 variant below), else memory/local
    S3: tuple[str, dict] | None = None

    @initialize(kind=st.sampled_from(["memory", "local"]))
    def setup(self, kind):
        self.tmp = tempfile.mkdtemp(prefix="mcsm-") if kind == "local" and not self.S3 else None
        self.so = None
        if self.S3:
            self.prefix, self.so = f"{self.S3[0]}/sm-{uuid.uuid4().hex[:10]}", self.S3[1]
        else:
            self.prefix = self.tmp if self.tmp else f"memory://sm-{uuid.uuid4().hex[:10]}"
        self.url = f"{self.prefix}/main"
        self.t = mcstore.create(self.url, dim=DIM, block=B, epoch=E, storage_options=self.so)
        self.model = Model()
        self.tags: dict[str, int] = {}
        self.objects: dict[int, dict[str, bytes]] = {1: {}}
        self.forks = 0
        self.expired: set[int] = set()
        self.redacted = 0

    def teardown(self):
        if getattr(self, "tmp", None):
            shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(n=SIZES, seed=st.integers(0, 2**16))
    def append(self, n, seed):
        toks = np.random.default_rng(seed).integers(0, 60_000, n).astype(np.int32)
        v = self.t.append(toks, gister=gister, source=f"s{seed}")
        self.model.append(v, toks, f"s{seed}")
        self.objects[v] = self.objects[v - 1]

    @rule(data=st.binary(max_size=40))
    def commit_object(self, data):
        v = self.t.commit_objects({"idx": data})
        self.model.same_content(v)
        self.objects[v] = {**self.objects[v - 1], "idx": data}

    @precondition(lambda self: self.model.versions[self.model.head][0].size)
    @rule(data=st.data(), seed=st.integers(0, 2**16))
    def redact(self, data, seed):
        """Rows rewritten in place: this and later versions read them, older ones do not."""
        old, segs = self.model.versions[self.model.head]
        a = data.draw(st.integers(0, len(old) - 1))
        n = data.draw(st.integers(1, min(len(old) - a, 80)))
        new_ids = np.random.default_rng(seed).integers(0, 60_000, n).astype(np.int32)
        v = self.t.redact([(a, new_ids)], gister=gister)
        toks = old.copy()
        toks[a : a + n] = new_ids
        self.model.versions[v] = (toks, segs)
        self.model.head = v
        self.objects[v] = self.objects[v - 1]
        self.redacted = v

    @precondition(lambda self: self.redacted)
    @rule()
    def purge(self):
        """Every version before the newest redaction goes (tags on them too); what stays reads
        exactly and verifies (test_purge.py scans the bytes)."""
        rep = mcstore.purge(
            self.url, storage_options=self.so, drop_tags=True, grace=0, no_live_writers=True
        )
        gone = {v for v in range(1, self.redacted)} - self.expired
        assert set(rep.expired) == gone
        self.expired |= gone
        self.tags = {n: v for n, v in self.tags.items() if v >= self.redacted}
        for v in sorted(set(self.model.versions) - self.expired):
            r = mcstore.open(self.url, version=v, storage_options=self.so)
            check_tree(r, *self.model.versions[v], B)
        assert set(mcstore.open(self.url, storage_options=self.so).tags()) == set(self.tags)
        mcstore.verify(self.url, storage_options=self.so)

    @rule()
    def reopen(self):
        self.t = mcstore.open(self.url, "a", storage_options=self.so)

    @rule(data=st.data())
    def time_travel(self, data):
        v = data.draw(st.integers(1, self.model.head))
        if v in self.expired:
            with pytest.raises(mcstore.VersionNotFound, match="expired"):
                mcstore.open(self.url, version=v, storage_options=self.so)
            return
        old = mcstore.open(self.url, version=v, storage_options=self.so)
        check_tree(old, *self.model.versions[v], B)
        assert {n: old.read_object(n) for n in old.objects()} == self.objects[v]

    @rule(keep=st.integers(1, 6))
    def expire(self, keep):
        """Snapshot expiry: every kept version and tag still reads exactly; the rest say
        they were expired."""
        rep = mcstore.gc(
            self.url, grace=0, no_live_writers=True, keep_last=keep, storage_options=self.so
        )
        assert self.model.head not in rep.expired
        assert not set(rep.expired) & set(self.tags.values())
        self.expired |= set(rep.expired)
        for v in sorted(set(self.model.versions) - self.expired):
            r = mcstore.open(self.url, version=v, storage_options=self.so)
            check_tree(r, *self.model.versions[v], B)
            assert {n: r.read_object(n) for n in r.objects()} == self.objects[v]
        mcstore.verify(self.url, storage_options=self.so)

    @rule(data=st.data())
    def tag(self, data):
        v = data.draw(st.integers(1, self.model.head).filter(lambda v: v not in self.expired))
        name = f"t{len(self.tags)}"
        self.t.tag(name, v)
        self.tags[name] = v
        assert mcstore.open(self.url, version=name, storage_options=self.so).version == v

    @precondition(lambda self: self.forks < 2)
    @rule()
    def fork_and_continue_there(self):
        # the fork becomes the tree under test; the parent must stay readable and unchanged
        parent, pv = self.url, self.model.head
        self.url = f"{self.prefix}/fork{self.forks}"
        self.forks += 1
        self.t = mcstore.fork(parent, self.url, storage_options=self.so)
        toks, segs = self.model.versions[pv]
        check_tree(mcstore.open(parent, storage_options=self.so), toks, segs, B)
        self.model = Model()
        self.model.versions[2] = (toks, segs)
        self.model.head = 2
        self.objects = {1: {}, 2: self.objects[pv]}
        self.tags = {}
        self.expired = set()
        self.redacted = 0
        self.parent = (parent, pv, toks, segs)

    @rule()
    def gc(self):
        rep = mcstore.gc(self.url, grace=0, no_live_writers=True, storage_options=self.so)
        assert not any(
            p.startswith(("log/", "arrays/", "refs/")) and "/c/" not in p for p in rep.removed
        )
        if getattr(self, "parent", None):
            mcstore.gc(self.parent[0], grace=0, no_live_writers=True, storage_options=self.so)

    @invariant()
    def matches_model(self):
        if not hasattr(self, "t"):
            return
        check_tree(self.t, *self.model.versions[self.model.head], B)
        assert self.t.version == self.model.head
        if getattr(self, "parent", None):
            url, _pv, toks, segs = self.parent
            check_tree(mcstore.open(url, storage_options=self.so), toks, segs, B)


TreeMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_tree_machine = TreeMachine.TestCase


@pytest.mark.s3
def test_tree_machine_on_s3(moto_server):
    """The same machine on the moto S3 server (fewer, shorter runs: every step is HTTP)."""
    from tests.store.conftest import BUCKET

    class S3TreeMachine(TreeMachine):
        S3 = (f"s3://{BUCKET}", moto_server["storage_options"])

    run_state_machine_as_test(
        S3TreeMachine,
        settings=settings(
            max_examples=6,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
