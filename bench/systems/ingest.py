"""Ingest throughput, local disk vs S3 (a moto server in its own process on 127.0.0.1).

The same ids go through ``Session.append_ids`` (GistNet, the store, the retrieval index) into a
local and an S3 tree, chunk by chunk alternately, so both see the same machine load. The time is
split by the spans ``append_ids`` reports (``mcruntime.hooks``): ``gist`` (the GistNet calls),
``store`` (``tree.append``, less the GistNet calls it makes) and ``index`` (the retrieval index's
update and persist, which commits the keys of every completed epoch to the tree: its PUTs and
bytes are counted too).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from bench.systems.footprint import tree_bytes
from bench.systems.trees import history, session_for
from mcruntime.hooks import Timings


def bench_ingest(base, gistnet, src, n_tokens: int, chunk: int, rundir: Path, s3so, window: int):
    """Append the same ids to a local and an S3 tree, chunk by chunk alternately."""
    backends = {"local": (str(rundir / f"ingest-{uuid.uuid4().hex[:6]}.mc"), None)}
    if s3so is not None:
        backends["s3"] = (f"s3://bench/{uuid.uuid4().hex[:8]}/ingest.mc", s3so)
    sess, timings = {}, {}
    for b, (url, so) in backends.items():
        timings[b] = Timings()
        sess[b] = session_for(url, base, gistnet, window, storage_options=so, hooks=timings[b])
    total = dict.fromkeys(backends, 0.0)
    for k, a in enumerate(range(0, n_tokens, chunk)):
        ids = history(src, a, min(n_tokens, a + chunk))
        order = list(backends) if k % 2 == 0 else list(reversed(backends))
        for b in order:
            t0 = time.perf_counter()
            sess[b].append_ids(ids, source="bench:ingest")
            total[b] += time.perf_counter() - t0
    out = {}
    for b, s in sess.items():
        t = timings[b]
        gist, append, index = t.total("gist"), t.total("store"), t.total("index")
        io = s.tree.io_stats
        out[b] = {
            "tokens": n_tokens,
            "seconds": total[b],
            "tokens_per_s": n_tokens / total[b],
            "gist_s": gist,
            "store_s": append - gist,  # tree.append minus the GistNet calls it made
            "index_s": index,
            "other_s": total[b] - append - index,
            "store_tokens_per_s": n_tokens / max(1e-9, append - gist),
            "puts": io.get("puts"),
            "put_bytes": io.get("put_bytes"),
            "bytes_stored": tree_bytes(backends[b][0], backends[b][1])["total"],
        }
        s.close()
    if "s3" in out:
        out["s3_over_local"] = {
            "tokens_per_s": out["s3"]["tokens_per_s"] / out["local"]["tokens_per_s"],
            "store_tokens_per_s": out["s3"]["store_tokens_per_s"]
            / out["local"]["store_tokens_per_s"],
        }
    return out
