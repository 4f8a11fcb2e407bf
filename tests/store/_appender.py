"""Child process for crash and race tests: appends deterministic runs until killed/done.

python -m tests.store._appender URL MODE ARG   (MODE: crash -> loop forever; race WRITER N)
"""

from __future__ import annotations

import sys

import numpy as np

import mcstore
from tests.store.helpers import gister

B, E = 4, 64


def crash_tokens(version: int) -> np.ndarray:
    rng = np.random.default_rng(version)
    n = int(rng.choice([1, 3, 17, 60, 64, 150, 300]))
    return rng.integers(0, 40_000, n).astype(np.int32)


def race_tokens(writer: int, i: int) -> np.ndarray:
    rng = np.random.default_rng(1000 * writer + i)
    n = int(rng.integers(1, 140))
    return (rng.integers(0, 1000, n) + 1000 * writer).astype(np.int32)


def main() -> None:
    url, mode = sys.argv[1], sys.argv[2]
    t = mcstore.open(url, "a")
    if mode == "crash":
        print("ready", flush=True)  # the parent times its kill from here, not from spawn
        while True:
            v = t.version + 1
            t.append(crash_tokens(v), gister=gister, source=f"child{v}")
            print(v, flush=True)
    writer, n = int(sys.argv[3]), int(sys.argv[4])
    conflicts = 0
    for i in range(n):
        while True:
            try:
                t.append(race_tokens(writer, i), gister=gister, source=f"w{writer}-{i}")
                break
            except mcstore.CommitConflict:
                conflicts += 1
                t.refresh()
    print(f"conflicts {conflicts}", flush=True)


if __name__ == "__main__":
    main()
