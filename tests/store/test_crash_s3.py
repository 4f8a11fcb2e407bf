"""Crash safety on S3: writers SIGKILLed at random points on moto and on SeaweedFS.

The local-disk version (test_crash_race.py) kills 20 writers; over HTTP each append takes
longer, so fewer kills here, each landing anywhere in a commit's PUTs (or in the writer's
first-use check of conditional writes). After every kill the tree must read bit-exact at its
newest version, and another writer must be able to continue past the debris."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mcstore
from tests.store._appender import B, E, crash_tokens
from tests.store.helpers import DIM, check_tree, gister

ROOT = Path(__file__).resolve().parents[2]
KILLS = 3


def _child_env(so: dict) -> dict:
    """The appender child opens the tree by URL alone: the endpoint and keys go by env."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "AWS_ENDPOINT_URL": so["endpoint_url"],
        "AWS_ACCESS_KEY_ID": so["key"],
        "AWS_SECRET_ACCESS_KEY": so["secret"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def _expected(head: int, mine: dict[int, np.ndarray]):
    toks, segs, pos = [np.zeros(0, np.int32)], [], 0
    for v in range(2, head + 1):
        t = mine[v] if v in mine else crash_tokens(v)
        segs.append((pos, pos + len(t), "parent" if v in mine else f"child{v}"))
        pos += len(t)
        toks.append(t)
    return np.concatenate(toks), segs


@pytest.mark.parametrize("kind", ["s3", "seaweed"])
def test_sigkill_on_s3(kind, backend_for):
    url, so = backend_for(kind)
    mcstore.create(url, dim=DIM, block=B, epoch=E, storage_options=so)
    rnd = random.Random(11)
    mine: dict[int, np.ndarray] = {}
    progressed = 0
    for i in range(KILLS):
        p = subprocess.Popen(
            [sys.executable, "-m", "tests.store._appender", url, "crash"],
            cwd=ROOT,
            env=_child_env(so),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert p.stdout.readline().strip() == b"ready", p.stderr.read().decode()[-2000:]
        # the first child is killed only after its first commit, so the test sees progress
        # however loaded the machine is; the others at a random moment
        first = p.stdout.readline() if i == 0 else b""
        time.sleep(rnd.uniform(0.05, 1.0))  # an append over HTTP takes tens of ms
        p.send_signal(signal.SIGKILL)
        out, err = p.communicate()
        assert p.returncode == -signal.SIGKILL, err.decode()[-2000:]
        committed = [int(x) for x in (first + out).split()]
        t = mcstore.open(url, "a", storage_options=so)
        if committed:
            assert t.version >= committed[-1]
            progressed += 1
        check_tree(t, *_expected(t.version, mine), B)
        if i % 2 == 0:  # another writer continues after the crash (over its orphan shards)
            extra = np.full(rnd.choice([5, 64, 130]), 40_001 + i, np.int32)
            v = t.append(extra, gister=gister, source="parent")
            mine[v] = extra
            check_tree(mcstore.open(url, storage_options=so), *_expected(v, mine), B)
    assert progressed >= 1  # the children did commit between kills
    mcstore.verify(url, storage_options=so)
