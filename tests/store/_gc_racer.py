"""A crashed writer's debris, and child processes for the gc race test (issue 22, item 1).

python -m tests.store._gc_racer MODE   (MODE: writer | gc); then one line per run on stdin,
``URL DELAY``: after DELAY seconds the writer resumes the crashed append on URL (the gc
collects URL) and prints one line: ``ok VERSION SECONDS`` (writer), ``ok SHARDS_REMOVED
SECONDS SHARDS_KEPT_YOUNG`` (gc) or ``err …``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

import mcstore
from mcstore.testing import BackendWrapper
from tests.store.helpers import gister

B, E = 4, 64
AGE = 7200.0  # seconds: the crash happened long before the resume (beyond gc's grace)
NOW = 1_700_000_000_000_000_000  # the nodes' creation time: the resume writes the same bytes


def base_tokens() -> np.ndarray:
    return (np.arange(2 * E) * 7 % 1000).astype(np.int32)


def resumed_tokens() -> np.ndarray:
    return (np.arange(3 * E + 10) * 13 % 997 + 1000).astype(np.int32)


class Killed(Exception):
    """The writer dies here."""


class CrashAtRecord(BackendWrapper):
    """A writer killed after its shards and tail delta, before its commit record."""

    def before(self, op, target):
        if op == "put_if_absent" and str(target).startswith("log/0"):
            raise Killed


def crash(url: str) -> None:
    """Leave what a writer killed before its record leaves, written ``AGE`` seconds ago."""
    t = mcstore.open(CrashAtRecord(mcstore.backend_for(url)), "a")
    try:
        t.append(resumed_tokens(), gister=gister, source="resumed", now=NOW)
    except Killed:
        pass
    else:
        raise AssertionError("the writer was not killed")
    age(url)


def age(url: str) -> None:
    """Date every object of the tree ``AGE`` seconds back."""
    old = time.time() - AGE
    for p in Path(url).rglob("*"):
        if p.is_file():
            os.utime(p, (old, old))


def main() -> None:
    mode = sys.argv[1]
    print("ready", flush=True)
    for line in sys.stdin:
        url, delay = line.split()
        time.sleep(float(delay))
        t0 = time.perf_counter()
        try:
            if mode == "writer":
                t = mcstore.open(url, "a")
                v = t.append(resumed_tokens(), gister=gister, source="resumed", now=NOW)
                print(f"ok {v} {time.perf_counter() - t0:.4f}", flush=True)
            else:
                rep = mcstore.gc(url, grace=3600.0)
                n = sum(p.startswith("arrays/") for p in rep.removed)
                young = sum(p.startswith("arrays/") for p in rep.kept_young)
                print(f"ok {n} {time.perf_counter() - t0:.4f} {young}", flush=True)
        except Exception as e:  # reported to the parent, which fails the run
            print(f"err {type(e).__name__}: {e}".replace("\n", " "), flush=True)


if __name__ == "__main__":
    main()
