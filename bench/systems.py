"""Systems benchmarks: what MegaContext costs, measured side by side in one run.

    python -m bench systems [--quick] [--out-dir bench/results]

1. **Decode latency per token vs history length** (the constant-compute claim): one session per
   history length, all open at once, decoding *interleaved* token by token through the real
   ``Session.chat_stream`` path, so a busy neighbour slows every length alike. The decoded tokens
   are forced (a fixed piece of held-out text; EOS never wins) so every length does the same work.
   Each step is classified: a pure decode step (one position against the KV cache), a refocus
   step (every ``refocus_every`` tokens: scoring + allocator + reading vectors + recomputing the
   KV cache from the first changed entry), the first token (focus rounds + prefill) and the end
   of the turn (question and answer appended to the tree).
2. **Refocus latency per scorer** (recency, similarity, attention), split into scoring,
   retrieval assist, allocator + vector reads, and KV recompute, with the positions recomputed.
3. **Ingest tokens/s**, local disk vs S3 (a moto server in its own process on 127.0.0.1),
   chunk by chunk alternately, with the time spent in GistNet and in the store apart.
4. **Bytes stored per million tokens** (listing the tree's objects) vs the base model's full KV
   cache for the same history.
5. **Memory**: RSS of a fresh process (``--rss-child``) that loads the model, opens the tree and
   chats, at each history length.

Trees are real: token ids appended through ``Session.append_ids`` in large chunks, every gist
made by GistNet (untrained: the cost is the same). They are built once into
``bench/results/tmp/systems/`` and reused (forked per run, so the cached tree never changes).
Writes ``systems.json``, ``systems.md`` and ``systems_latency.png`` under the output folder.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "tmp" / "systems"
MODELS = ("smollm2", "tiny")
SCORERS = ("recency", "similarity", "attention")
INGEST_CHUNK = 32768  # what `mc ingest` commits per append (mcruntime.ingest.CHUNK_TOKENS)
BUILD_CHUNK = 1 << 17
FORCED_TEXT = (
    "The results are summarised below, one table per benchmark, with the machine they ran on "
    "and the command that produced them, so anyone can check every number again. "
)
QUESTION = "Summarise what you remember of the documents above, in detail."


@dataclass
class Plan:
    histories: dict[str, list[int]]
    window: int = 2048
    rounds: dict[str, int] = field(default_factory=dict)  # model -> chat turns per session
    new_tokens: int = 72  # tokens decoded per turn (refocus after 32 and 64)
    warmup: int = 3  # decode steps after the first token left out of the statistics
    refocus_reps: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> scorer -> n
    ingest_tokens: dict[str, int] = field(default_factory=dict)
    ingest_chunk: int = INGEST_CHUNK
    rss: bool = True
    rss_tokens: int = 40
    s3: bool = True


FULL = Plan(
    histories={
        "smollm2": [8_000, 64_000, 1_000_000],
        "tiny": [8_000, 64_000, 1_000_000, 10_000_000],
    },
    rounds={"smollm2": 3, "tiny": 6},
    refocus_reps={
        "smollm2": {"recency": 3, "similarity": 3, "attention": 1},
        "tiny": {"recency": 8, "similarity": 8, "attention": 8},
    },
    ingest_tokens={"smollm2": 262_144, "tiny": 1_048_576},
)
QUICK = Plan(
    histories={"smollm2": [8_000, 64_000], "tiny": [8_000, 64_000, 1_000_000]},
    rounds={"smollm2": 1, "tiny": 3},
    new_tokens=40,
    refocus_reps={
        "smollm2": {"recency": 1, "similarity": 1},  # attention: ~40 s and ~4 GB a step
        "tiny": {"recency": 4, "similarity": 4, "attention": 4},
    },
    ingest_tokens={"smollm2": 65_536, "tiny": 262_144},
    rss_tokens=24,
)


# -- machine, memory -----------------------------------------------------------------------------


def proc_status() -> dict[str, float]:
    """VmRSS / VmHWM of this process in MiB (from /proc; ru_maxrss where /proc is missing)."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(val.split()[0]) / 1024
    except OSError:
        import resource

        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    commit, dirty = "unknown", None
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": mem,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


# -- models and histories ------------------------------------------------------------------------


def load_model(name: str):
    """(base, gistnet) for "smollm2" (the default base) or "tiny" (the test model)."""
    import mcmodels

    if name == "smollm2":
        base = mcmodels.load_base()
        torch.manual_seed(0)
        g = mcmodels.GistNet.for_base(base)
    elif name == "tiny":
        base = mcmodels.tiny_base(0)
        torch.manual_seed(0)
        # a narrower GistNet than the default: the tiny model exists for speed, and 10M tokens
        # through a 256-wide encoder would take 15 minutes of this CPU
        g = mcmodels.GistNet.for_base(base, hidden=64, heads=2)
    else:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    return base, g.eval()


def fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def source_ids(base, n_unique: int = 1 << 17) -> tuple[np.ndarray, str]:
    """Token ids of real held-out text (the corpus' test split) or, without a corpus, seeded
    pseudo-random ids. Histories tile these: latency does not depend on content."""
    from mcmodels.corpus import default_corpus_dir

    docs = default_corpus_dir() / "docs.jsonl"
    if docs.is_file():
        parts, total = [], 0
        with open(docs, encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                if d["split"] != "test":
                    continue
                ids = base.tokenizer.encode(d["text"][: 4 * n_unique])
                parts.append(np.asarray(ids, dtype=np.int32))
                total += len(ids)
                if total >= n_unique:
                    break
        if total >= 4096:
            arr = np.concatenate(parts)[:n_unique]
            return arr, f"held-out corpus text (test split), {len(arr)} tokens tiled"
    hi = 256 if base.vocab_size < 1024 else base.vocab_size  # bytes for a byte tokenizer
    arr = np.random.default_rng(0).integers(0, hi, n_unique).astype(np.int32)
    return arr, f"seeded pseudo-random token ids, {n_unique} tiled"


def history(src: np.ndarray, start: int, stop: int) -> np.ndarray:
    idx = np.arange(start, stop) % len(src)
    return src[idx]


def forced_ids(base) -> list[int]:
    ends = set(base.tokenizer.end_ids) | set(base.tokenizer.chat_parts().end_ids)
    ids = [i for i in base.tokenizer.encode(FORCED_TEXT * 4) if i not in ends]
    return ids


# -- trees ---------------------------------------------------------------------------------------


def session_for(tree, base, gistnet, window: int, **cfg):
    from mcruntime import Session, SessionConfig

    return Session(tree, model=base, gistnet=gistnet, window=window, config=SessionConfig(**cfg))


def build_tree(model: str, base, gistnet, n: int, src: np.ndarray, src_note: str, cache: Path):
    """A local tree of ``n`` tokens, built once (through ``Session.append_ids``, GistNet gists)
    and reused while the model, GistNet and history source stay the same. -> (path, info)."""
    key = hashlib.sha256(
        f"{base.name}|{fingerprint(gistnet)}|{hashlib.sha256(src.tobytes()).hexdigest()}".encode()
    ).hexdigest()[:10]
    path = cache / f"{model}-{n}-{key}.mc"
    done = path / "bench-build.json"
    if done.is_file():
        info = json.loads(done.read_text())
        info["cached"] = True
        return path, info
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = session_for(str(path), base, gistnet, 2048, retrieval=None)
    gist_s = _time_calls(s, "gister")
    t0 = time.perf_counter()
    for a in range(0, n, BUILD_CHUNK):
        b = min(n, a + BUILD_CHUNK)
        s.append_ids(
            history(src, a, b), source="bench:history", tags=(f"chunk={a // BUILD_CHUNK}",)
        )
        print(f"    built {b:,}/{n:,} tokens", end="\r", flush=True)
    print()
    dt = time.perf_counter() - t0
    s.close()
    info = {
        "tokens": n,
        "build_s": dt,
        "build_tokens_per_s": n / dt,
        "gist_s": gist_s[0],
        "history": src_note,
        "gistnet": fingerprint(gistnet),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    done.write_text(json.dumps(info, indent=2))
    info["cached"] = False
    return path, info


def fork_tree(src: Path, rundir: Path):
    """A writable copy-on-write fork of a cached tree (the cache itself never changes)."""
    import mcstore

    dst = mcstore.fork(str(src), str(rundir / f"{src.name}-{uuid.uuid4().hex[:6]}"))
    pin = src / "refs" / "forks" / f"{dst._facts['tree_id']}.json"
    return dst, pin


def tree_bytes(url: str, storage_options=None) -> dict:
    """Bytes on storage, by kind of object, from the backend's own listing."""
    import mcstore

    t = mcstore.open(url, "r", storage_options=storage_options)
    groups: dict[str, int] = {}
    for rel, size, _ in t._be.walk(""):
        parts = rel.replace("\\", "/").split("/")
        if parts[0] == "arrays" and len(parts) > 1:
            name = parts[1]
            kind = (
                "tokens"
                if name == "tokens"
                else "gists"
                if name.startswith("gist")
                else "segments"
                if name.startswith("seg")
                else "node metadata"
            )
        elif parts[0] in ("log", "tail", "refs", "index", "telemetry", "objects", "blobs"):
            kind = {"log": "commit log", "tail": "tail deltas"}.get(parts[0], parts[0])
        else:
            kind = "other"
        groups[kind] = groups.get(kind, 0) + size
    total = sum(groups.values())
    return {"length": t.length, "total": total, "by_kind": groups}


def kv_bytes_per_token(base, bytes_per_elt: int) -> int:
    cfg = base.model.config
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return int(cfg.num_hidden_layers) * 2 * int(kv) * int(hd) * bytes_per_elt


# -- instrumentation -----------------------------------------------------------------------------


def _time_calls(obj, attr: str) -> list[float]:
    """Wrap ``obj.attr`` (a callable) so the seconds spent in it accumulate in the returned cell."""
    fn = getattr(obj, attr)
    cell = [0.0]

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            cell[0] += time.perf_counter() - t0

    setattr(obj, attr, timed)
    return cell


class Probe:
    """Times what ``Session.chat_stream`` does, by wrapping the session's own methods.

    ``window.logits``: the model step (duration, positions computed); its result gets a bonus
    on the next forced token, so decoding never stops early and every history length decodes
    the same text. ``refocus``: one refocus call (duration, edits). ``scorer`` and the retrieval
    assist's ``boosts``: their share of it.
    """

    def __init__(self, session, forced: list[int]):
        self.s = session
        self.forced = forced
        self.k = 0
        self.events: list[dict] = []
        win = session.window
        logits, refocus = win.logits, session.refocus

        def timed_logits():
            before = win.recomputed
            t0 = time.perf_counter()
            out = logits()
            dt = time.perf_counter() - t0
            self.events.append(
                {"kind": "logits", "s": dt, "positions": win.recomputed - before, "len": win.length}
            )
            out = out.clone()
            out[self.forced[self.k % len(self.forced)]] = out.max() + 10.0
            self.k += 1
            return out

        def timed_refocus(query_ids, tail=None, rounds=1, **kw):
            t0 = time.perf_counter()
            edits = refocus(query_ids, tail=tail, rounds=rounds, **kw)
            self.events.append(
                {"kind": "refocus", "s": time.perf_counter() - t0, "edits": edits, "rounds": rounds}
            )
            return edits

        win.logits = timed_logits
        session.refocus = timed_refocus
        self.set_scorer(session.scorer)
        if session.index is not None:
            search = session.index.search

            def timed_search(*a, **k):
                t0 = time.perf_counter()
                out = search(*a, **k)
                self.events.append({"kind": "retrieval", "s": time.perf_counter() - t0})
                return out

            session.index.search = timed_search

    def set_scorer(self, scorer) -> None:
        def timed_scorer(view):
            t0 = time.perf_counter()
            out = scorer(view)
            self.events.append({"kind": "score", "s": time.perf_counter() - t0})
            return out

        self.s.scorer = timed_scorer


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _ms(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "median_ms": statistics.median(xs) * 1e3,
        "p90_ms": _pct(xs, 90) * 1e3,
        "mean_ms": statistics.fmean(xs) * 1e3,
        "min_ms": min(xs) * 1e3,
        "max_ms": max(xs) * 1e3,
    }


# -- 1. decode latency ---------------------------------------------------------------------------


def bench_decode(
    sessions: dict[int, object], probes: dict[int, Probe], plan: Plan, rounds: int
) -> dict:
    """Interleaved chat turns, one token of every session in turn; per-step classification."""
    steps: dict[int, list[dict]] = {n: [] for n in sessions}
    for rnd in range(rounds):
        gens = {
            n: s.chat_stream(QUESTION, max_new_tokens=plan.new_tokens) for n, s in sessions.items()
        }
        idx = dict.fromkeys(sessions, 0)
        live = sorted(gens)
        flip = False
        while live:
            order = list(reversed(live)) if flip else list(live)
            flip = not flip
            for n in order:
                p = probes[n]
                mark = len(p.events)
                c0, t0 = time.thread_time(), time.perf_counter()
                try:
                    next(gens[n])
                    done = False
                except StopIteration:
                    done = True
                dt, dc = time.perf_counter() - t0, time.thread_time() - c0
                ev = p.events[mark:]
                steps[n].append(
                    {"round": rnd, "i": idx[n], "s": dt, "cpu": dc, "done": done, "events": ev}
                )
                idx[n] += 1
                if done:
                    live.remove(n)
    out = {}
    for n, st in steps.items():
        out[n] = summarise_steps(st, plan)
    return out


def summarise_steps(steps: list[dict], plan: Plan) -> dict:
    """Statistics of one session's steps: wall time (what a user waits) and this thread's CPU
    time (what the step computed; unlike wall time it does not count time the scheduler gave
    to other processes on a shared machine)."""
    first, end, pure, pure_cpu, rsteps, rsteps_cpu = [], [], [], [], [], []
    amort_s = amort_cpu = 0.0
    amort_n = multi = 0
    rcalls, redits, rpos, pure_pos, trace, lens = [], [], [], [], [], []
    for st in steps:
        ev = st["events"]
        n_logits = sum(e["kind"] == "logits" for e in ev)
        rf = [e for e in ev if e["kind"] == "refocus"]
        pos = [e["positions"] for e in ev if e["kind"] == "logits"]
        kind = "first" if st["i"] == 0 else "end" if st["done"] else "refocus" if rf else "decode"
        trace.append(
            [
                st["round"],
                st["i"],
                kind,
                round(st["s"] * 1e3, 3),
                round(st["cpu"] * 1e3, 3),
                sum(pos),
            ]
        )
        if kind == "first":
            first.append(st["s"])
            continue
        if kind == "end":
            end.append(st["s"])
            continue
        if n_logits != 1:
            multi += 1  # a token that did not end a character: two steps in one next()
        k = max(1, n_logits)
        if st["i"] <= plan.warmup:
            continue
        amort_s += st["s"]
        amort_cpu += st["cpu"]
        amort_n += k
        if rf:
            rsteps.append(st["s"] / k)
            rsteps_cpu.append(st["cpu"] / k)
            rcalls += [e["s"] for e in rf]
            redits += [e["edits"] for e in rf]
            rpos += pos
        else:
            pure.append(st["s"] / k)
            pure_cpu.append(st["cpu"] / k)
            pure_pos += pos
            lens += [e["len"] for e in ev if e["kind"] == "logits" and "len" in e]
    return {
        "decode": _ms(pure),
        "decode_cpu": _ms(pure_cpu),
        "decode_positions_max": max(pure_pos) if pure_pos else None,
        "window_positions": [min(lens), max(lens)] if lens else None,  # cache length, decoding
        "refocus_step": _ms(rsteps),
        "refocus_step_cpu": _ms(rsteps_cpu),
        "refocus_call": _ms(rcalls),
        "refocus_edits": redits,
        "refocus_recomputed_positions": rpos,
        "amortized_ms_per_token": amort_s / amort_n * 1e3 if amort_n else None,
        "amortized_cpu_ms_per_token": amort_cpu / amort_n * 1e3 if amort_n else None,
        "tokens_measured": amort_n,
        "first_token": _ms(first),
        "end_of_turn": _ms(end),
        "multi_token_steps": multi,
        "trace": {
            "columns": ["round", "step", "kind", "wall_ms", "cpu_ms", "positions"],
            "rows": trace,
        },
    }


RATIOS = {
    "decode_median": lambda d: d["decode"].get("median_ms"),
    "decode_p90": lambda d: d["decode"].get("p90_ms"),
    "decode_cpu_median": lambda d: d["decode_cpu"].get("median_ms"),
    "decode_cpu_p90": lambda d: d["decode_cpu"].get("p90_ms"),
    "amortized": lambda d: d["amortized_ms_per_token"],
    "amortized_cpu": lambda d: d["amortized_cpu_ms_per_token"],
}


# -- 2. refocus latency per scorer ---------------------------------------------------------------


def bench_refocus(
    sessions: dict[int, object], probes: dict[int, Probe], reps: dict[str, int], seed=0
) -> dict:
    """Refocus steps for queries taken from random places of the history, interleaved across
    history lengths; each split into scoring, retrieval, allocator + reads, KV recompute."""
    from mcruntime.scorers import make_scorer

    out: dict[str, dict[int, dict]] = {}
    rng = np.random.default_rng(seed)
    for name in SCORERS:
        k = reps.get(name, 0)
        if not k:
            continue
        rows: dict[int, list[dict]] = {n: [] for n in sessions}
        for n in sessions:
            probes[n].set_scorer(make_scorer(name))
        for _ in range(k):
            frac = float(rng.random())
            for n, s in sessions.items():
                p = probes[n]
                n_hist = s.tree.length
                at = int(frac * max(1, n_hist - 16))
                q = [int(x) for x in s.tree.tokens(at, at + 16)]
                s._sync()
                s.window.logits()  # a clean cache before the step, as during decoding
                mark = len(p.events)
                c0, t0 = time.thread_time(), time.perf_counter()
                edits = s.refocus(q, rounds=1)
                t1 = time.perf_counter()
                first = s.window.cached
                s.window.logits()
                t2, c2 = time.perf_counter(), time.thread_time()
                ev = p.events[mark:]
                score = sum(e["s"] for e in ev if e["kind"] == "score")
                retr = sum(e["s"] for e in ev if e["kind"] == "retrieval")
                pos = sum(e["positions"] for e in ev if e["kind"] == "logits")
                rows[n].append(
                    {
                        "score_s": score,
                        "retrieval_s": retr,
                        "allocate_read_s": (t1 - t0) - score - retr,
                        "recompute_s": t2 - t1,
                        "total_s": t2 - t0,
                        "total_cpu_s": c2 - c0,
                        "edits": edits,
                        "first_changed": first,
                        "positions": pos,
                    }
                )
        out[name] = {}
        for n, rs in rows.items():
            out[name][n] = {
                "reps": len(rs),
                "score_ms": _ms([r["score_s"] for r in rs]),
                "retrieval_ms": _ms([r["retrieval_s"] for r in rs]),
                "allocate_read_ms": _ms([r["allocate_read_s"] for r in rs]),
                "recompute_ms": _ms([r["recompute_s"] for r in rs]),
                "total_ms": _ms([r["total_s"] for r in rs]),
                "total_cpu_ms": _ms([r["total_cpu_s"] for r in rs]),
                "edits": [r["edits"] for r in rs],
                "first_changed": [r["first_changed"] for r in rs],
                "positions_recomputed": [r["positions"] for r in rs],
                # recompute cost normalised by its size (steps that changed something)
                "recompute_ms_per_position": _median(
                    [r["recompute_s"] * 1e3 / r["positions"] for r in rs if r["positions"] > 1]
                ),
            }
    # back to the session's own scorer
    for n, s in sessions.items():
        probes[n].set_scorer(make_scorer(s.config.scorer or "recency"))
    return out


# -- 3. ingest -----------------------------------------------------------------------------------


@contextlib.contextmanager
def moto_s3():
    """A moto S3 server in its own process on 127.0.0.1 (like a remote store, it does not share
    this process' interpreter); yields fsspec storage options with bucket "bench" created."""
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    so = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "key": "bench",
        "secret": "bench",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    try:
        import s3fs

        deadline = time.time() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.2)
        s3fs.S3FileSystem(**so).call_s3("create_bucket", Bucket="bench")
        yield so
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def bench_ingest(base, gistnet, src, n_tokens: int, chunk: int, rundir: Path, s3so, window: int):
    """Append the same ids to a local and an S3 tree, chunk by chunk alternately."""
    backends = {"local": (str(rundir / f"ingest-{uuid.uuid4().hex[:6]}.mc"), None)}
    if s3so is not None:
        backends["s3"] = (f"s3://bench/{uuid.uuid4().hex[:8]}/ingest.mc", s3so)
    sess, cells = {}, {}
    for b, (url, so) in backends.items():
        from mcruntime import Session, SessionConfig

        s = Session(
            url,
            model=base,
            gistnet=gistnet,
            window=window,
            storage_options=so,
            config=SessionConfig(),
        )
        sess[b] = s
        cells[b] = {
            "gist": _time_calls(s, "gister"),
            "store": _time_calls(s.tree, "append"),
            "index": _time_calls(s.index, "update") if s.index is not None else [0.0],
        }
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
        c = cells[b]
        gist, append, index = c["gist"][0], c["store"][0], c["index"][0]
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


# -- 5. memory (child process) -------------------------------------------------------------------


@contextlib.contextmanager
def timed_index_builds():
    """Seconds spent building the session's retrieval index (``NodeIndex``) while opening."""
    import mcruntime.session as ms

    orig, cell = ms.NodeIndex, [0.0]

    class Timed(orig):
        def __init__(self, *a, **k):
            t0 = time.perf_counter()
            super().__init__(*a, **k)
            cell[0] += time.perf_counter() - t0

    ms.NodeIndex = Timed
    try:
        yield cell
    finally:
        ms.NodeIndex = orig


def rss_child(args: dict) -> dict:
    """In a fresh process: load the model, open (a fork of) the tree, chat; report RSS."""
    torch.set_num_threads(1)
    r0 = proc_status()
    base, g = load_model(args["model"])
    r1 = proc_status()
    rundir = Path(args["rundir"])
    tree, pin = fork_tree(Path(args["tree"]), rundir)
    s = session_for(tree, base, g, args["window"])
    r2 = proc_status()
    probe = Probe(s, forced_ids(base))
    during: list[float] = []
    for _ in s.chat_stream(QUESTION, max_new_tokens=args["tokens"]):
        during.append(proc_status().get("VmRSS", float("nan")))
    r3 = proc_status()
    pin.unlink(missing_ok=True)
    cache = s.tree.cache_stats()
    idx = s.index.index if s.index is not None else None
    vectors = sum(ix.ntotal for ix in idx.levels.values()) if idx is not None else 0
    return {
        "store_cache_entries": cache.get("entries"),
        "store_cache_bytes": cache.get("bytes"),  # as the store's LRU accounts them
        "index_vectors": vectors,
        "index_bytes": vectors * base.d_model * 4,  # flat fp32 faiss indexes
        "rss_start_mib": r0.get("VmRSS"),
        "rss_model_mib": r1.get("VmRSS"),
        "rss_open_mib": r2.get("VmRSS"),
        "rss_chat_max_mib": max(during) if during else None,
        "rss_end_mib": r3.get("VmRSS"),
        "hwm_mib": r3.get("VmHWM"),
        "tokens": probe.k,
        "history": s.tree.length,
    }


def run_rss_child(model: str, tree: Path, rundir: Path, window: int, tokens: int) -> dict:
    args = {
        "model": model,
        "tree": str(tree),
        "rundir": str(rundir),
        "window": window,
        "tokens": tokens,
    }
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    p = subprocess.run(
        [sys.executable, "-m", "bench", "systems", "--rss-child", json.dumps(args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"}
    return json.loads(p.stdout.strip().splitlines()[-1])


# -- the run -------------------------------------------------------------------------------------


def run(plan: Plan, models=MODELS, *, cache: Path = CACHE, log=print) -> dict:
    torch.set_num_threads(1)
    t_run = time.perf_counter()
    res: dict = {
        "machine": machine_info(),
        "plan": asdict(plan),
        "models": {},
    }
    rundir = cache / f"run-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    rundir.mkdir(parents=True, exist_ok=True)
    pins: list[Path] = []
    try:
        s3ctx = moto_s3() if plan.s3 else contextlib.nullcontext(None)
        with s3ctx as s3so:
            for model in models:
                log(f"== {model}")
                res["models"][model] = run_model(model, plan, cache, rundir, s3so, pins, log)
    finally:
        for p in pins:
            p.unlink(missing_ok=True)
        shutil.rmtree(rundir, ignore_errors=True)
    res["machine"]["loadavg_end"] = _loadavg()
    res["seconds"] = time.perf_counter() - t_run
    return res


def run_model(model: str, plan: Plan, cache: Path, rundir: Path, s3so, pins, log) -> dict:
    t0 = time.perf_counter()
    base, g = load_model(model)
    out: dict = {"base": base.name, "d_model": base.d_model, "load_s": time.perf_counter() - t0}
    src, note = source_ids(base)
    out["history_source"] = note
    out["gistnet"] = {"hash": fingerprint(g), "hidden": g.cfg.hidden, "layers": g.cfg.layers}
    hs = sorted(plan.histories.get(model, []))
    trees, builds = {}, {}
    for n in hs:
        log(f"  tree of {n:,} tokens")
        trees[n], builds[n] = build_tree(model, base, g, n, src, note, cache)
    out["builds"] = {str(n): b for n, b in builds.items()}

    # 4. bytes
    kv16, kv32 = kv_bytes_per_token(base, 2), kv_bytes_per_token(base, 4)
    out["kv_bytes_per_token"] = {"fp16/bf16": kv16, "fp32": kv32}
    out["bytes"] = {}
    for n in hs:
        tb = tree_bytes(str(trees[n]))
        per_m = tb["total"] / tb["length"] * 1e6
        out["bytes"][str(n)] = {
            **tb,
            "bytes_per_million_tokens": per_m,
            "bytes_per_token": tb["total"] / tb["length"],
            "kv_fp16_bytes": kv16 * tb["length"],
            "kv_over_tree_fp16": kv16 * tb["length"] / tb["total"],
            "kv_over_tree_fp32": kv32 * tb["length"] / tb["total"],
        }

    # sessions on forks of the cached trees, all open at once
    sessions, probes, opens, index_s = {}, {}, {}, {}
    forced = forced_ids(base)
    for n in hs:
        tree, pin = fork_tree(trees[n], rundir)
        pins.append(pin)
        t = time.perf_counter()
        with timed_index_builds() as cell:
            s = session_for(tree, base, g, plan.window)
        opens[n] = time.perf_counter() - t
        index_s[n] = cell[0]
        sessions[n] = s
        probes[n] = Probe(s, forced)
    out["session_open_s"] = {str(n): v for n, v in opens.items()}
    out["session_open_index_s"] = {str(n): v for n, v in index_s.items()}
    cfg = next(iter(sessions.values())).config
    out["session_config"] = asdict(cfg)
    out["scorer"] = cfg.scorer or "recency"

    # 1. decode
    rounds = plan.rounds.get(model, 1)
    log(f"  decode: {rounds} turn(s) x {plan.new_tokens} tokens, interleaved over {hs}")
    dec = bench_decode(sessions, probes, plan, rounds)
    n0 = hs[0]
    for n in hs:
        dec[n]["history"] = sessions[n].tree.length
        dec[n]["ratio_vs_smallest"] = {
            name: (get(dec[n]) / get(dec[n0]) if get(dec[n]) and get(dec[n0]) else None)
            for name, get in RATIOS.items()
        }
    out["decode"] = {str(n): v for n, v in dec.items()}

    # 2. refocus per scorer
    log("  refocus per scorer")
    rf = bench_refocus(sessions, probes, plan.refocus_reps.get(model, {}))
    out["refocus"] = {sc: {str(n): v for n, v in per.items()} for sc, per in rf.items()}
    for s in sessions.values():
        s.close()
    sessions.clear()
    probes.clear()

    # 3. ingest
    if plan.ingest_tokens.get(model):
        log(f"  ingest {plan.ingest_tokens[model]:,} tokens, local vs S3")
        out["ingest"] = bench_ingest(
            base, g, src, plan.ingest_tokens[model], plan.ingest_chunk, rundir, s3so, plan.window
        )

    # 5. memory, one fresh process per history length
    if plan.rss:
        out["rss"] = {}
        for n in hs:
            log(f"  RSS during chat, {n:,} tokens (child process)")
            out["rss"][str(n)] = run_rss_child(
                model, trees[n], rundir, plan.window, plan.rss_tokens
            )
    return out


# -- report --------------------------------------------------------------------------------------


def _f(x, fmt="{:.1f}", none="–"):
    return none if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def _n(n: int) -> str:
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{unit}"
    return f"{n:,}"


def _size(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:,.0f} {unit}" if unit == "B" else f"{b:,.1f} {unit}"
        b /= 1024
    return f"{b:,.1f} TiB"


def _get(d: dict, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


TARGET_RATIO = 1.1  # DESIGN.md §5 / issue 4: decode latency at 1M within 1.1x of 8k


def summary(res: dict) -> list[str]:
    """Headline lines computed from the results (nothing here is typed in by hand)."""
    out = []
    for r in res["models"].values():
        ns = list(r["decode"])
        lo, hi = ns[0], ns[-1]
        d = r["decode"][hi]
        rw, rc = (
            d["ratio_vs_smallest"]["decode_median"],
            d["ratio_vs_smallest"]["decode_cpu_median"],
        )
        met = (
            "met"
            if rw is not None and rc is not None and max(rw, rc) <= TARGET_RATIO
            else "NOT met"
        )
        out.append(
            f"- **{r['base']}**: pure decode step at {_n(int(hi))} vs {_n(int(lo))} tokens of "
            f"history: {_f(rw, '{:.3f}')}x wall median, {_f(rc, '{:.3f}')}x CPU median "
            f"(target <= {TARGET_RATIO}: {met}); "
            f"{_f(_get(r['decode'][lo], 'decode', 'median_ms'), '{:.1f}')} -> "
            f"{_f(_get(d, 'decode', 'median_ms'), '{:.1f}')} ms/token."
        )
        parts, recomputes = [], []
        for n in ns:
            dd = r["decode"][n]
            pos = [p for p in dd["refocus_recomputed_positions"] if p > 1]
            recomputes += pos
            parts.append(
                f"{_n(int(n))} {_f(dd['amortized_ms_per_token'], '{:.1f}')} ms "
                f"({len(pos)}/{len(dd['refocus_recomputed_positions'])} refocus steps "
                "changed the context)"
            )
        windows = [x for n in ns for x in (r["decode"][n].get("window_positions") or [])]
        line = (
            f"  Amortized incl. a refocus every {r['session_config']['refocus_every']} tokens: "
            + ", ".join(parts)
            + "."
        )
        if recomputes and windows:
            line += (
                f" Each refocus that changed the context recomputed {min(recomputes)}–"
                f"{max(recomputes)} of the {min(windows)}–{max(windows)} cached positions (the "
                "first changed entry is near the start of the window), so the amortized cost "
                "follows how many refocus steps edited the context."
            )
        out.append(line)
        b = r["bytes"][hi]
        out.append(
            f"  Storage: {b['bytes_per_million_tokens'] / 2**20:.1f} MiB per million tokens, "
            f"{b['kv_over_tree_fp16']:,.0f}x smaller than the fp16 KV cache of the same history. "
            f"Session open {_f(r['session_open_s'][lo], '{:.2f}')} s -> "
            f"{_f(r['session_open_s'][hi], '{:.2f}')} s (retrieval index rebuilt from the tree)."
        )
        rss = r.get("rss") or {}
        if lo in rss and hi in rss and "error" not in rss[lo] and "error" not in rss[hi]:
            out.append(
                f"  RSS during chat: {rss[lo]['rss_chat_max_mib']:.0f} MiB at {_n(int(lo))}, "
                f"{rss[hi]['rss_chat_max_mib']:.0f} MiB at {_n(int(hi))}."
            )
        ing = r.get("ingest") or {}
        if "local" in ing:
            line = f"  Ingest: {ing['local']['tokens_per_s']:,.0f} tokens/s local"
            if "s3" in ing:
                line += (
                    f", {ing['s3']['tokens_per_s']:,.0f} on S3 (moto) "
                    f"({ing['s3_over_local']['tokens_per_s']:.2f}x)"
                )
            share = ing["local"]["gist_s"] / ing["local"]["seconds"]
            out.append(line + f"; GistNet takes {share:.0%} of the local time.")
    return out


def tables(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores (shared), {_f(m.get('memory_gib'), '{:.0f}')} "
        f"GiB, torch {m['torch']} on {m['torch_threads']} thread; load average "
        f"{m.get('loadavg_start')} at start, {m.get('loadavg_end')} at end; commit "
        f"{m['git_commit'][:10]}{' (dirty)' if m.get('git_dirty') else ''}; {m['date']}.",
        "Wall = elapsed time; CPU = this thread's CPU time: it leaves out time the scheduler "
        "gave to other processes on this shared machine, but not their effect on shared caches "
        "and cores. Ratios compare sessions measured side by side in the same run.",
    ]
    lines += ["", "## Summary", "", *summary(res)]
    w = res["plan"]["window"]
    for model, r in res["models"].items():
        lines += ["", f"## {model}: {r['base']} (d={r['d_model']}), window {w}, scorer "
                  f"{r['scorer']} + retrieval {r['session_config'].get('retrieval')}",
                  f"History: {r['history_source']}; GistNet {r['gistnet']}.", ""]  # fmt: skip
        lines.append(
            "Decode: one session per history length, all decoding the same forced text, "
            "interleaved token by token. Pure decode = one position against the KV cache; "
            f"refocus step = every {r['session_config']['refocus_every']} tokens (scoring, "
            "allocator, vector reads, KV recompute from the first changed entry); amortized = "
            "all measured steps / tokens."
        )
        lines.append("")
        rows = []
        for n, d in r["decode"].items():
            rows.append([
                _n(int(n)),
                f"{_f(r['session_open_s'][n], '{:.2f}')} "
                f"({_f(_get(r, 'session_open_index_s', n), '{:.2f}')})",
                _f(_get(d, "first_token", "median_ms"), "{:.0f}"),
                f"{_f(_get(d, 'decode', 'median_ms'), '{:.2f}')} / "
                f"{_f(_get(d, 'decode', 'p90_ms'), '{:.2f}')}",
                f"{_f(_get(d, 'decode_cpu', 'median_ms'), '{:.2f}')} / "
                f"{_f(_get(d, 'decode_cpu', 'p90_ms'), '{:.2f}')}",
                f"{_f(_get(d, 'refocus_step', 'mean_ms'), '{:.0f}')} "
                f"({_get(d, 'refocus_step', 'n') or 0})",
                ", ".join(map(str, d["refocus_recomputed_positions"])) or "–",
                f"{_f(d['amortized_ms_per_token'], '{:.2f}')} / "
                f"{_f(d['amortized_cpu_ms_per_token'], '{:.2f}')}",
                _f(_get(d, "end_of_turn", "median_ms"), "{:.0f}"),
                "–".join(map(str, d.get("window_positions") or [])),
            ])  # fmt: skip
        lines += _table(
            ["history", "open s (index)", "first token ms", "decode ms/token wall med / p90",
             "CPU med / p90", "refocus step ms (n)", "positions recomputed",
             "amortized ms/token wall / CPU", "end of turn ms", "KV cache positions"],
            rows,
        )  # fmt: skip
        lines += ["", f"Ratios to the {_n(int(next(iter(r['decode']))))} history:", ""]
        rows = []
        for n, d in r["decode"].items():
            rat = d["ratio_vs_smallest"]
            rows.append([_n(int(n))] + [_f(rat.get(k), "{:.3f}") for k in RATIOS])
        lines += _table(["history", *RATIOS], rows)
        if r.get("refocus"):
            lines += ["", "Refocus steps for queries from random places of the history (median "
                      "ms; edits and positions recomputed per step):", ""]  # fmt: skip
            rows = []
            for sc, per in r["refocus"].items():
                for n, v in per.items():
                    rows.append([
                        sc, _n(int(n)),
                        _f(_get(v, "score_ms", "median_ms")),
                        _f(_get(v, "retrieval_ms", "median_ms")),
                        _f(_get(v, "allocate_read_ms", "median_ms")),
                        _f(_get(v, "recompute_ms", "median_ms"), "{:.0f}"),
                        _f(_get(v, "total_ms", "median_ms"), "{:.0f}"),
                        _f(_get(v, "total_cpu_ms", "median_ms"), "{:.0f}"),
                        ", ".join(map(str, v["edits"])),
                        ", ".join(map(str, v["positions_recomputed"])),
                        _f(v.get("recompute_ms_per_position"), "{:.2f}"),
                    ])  # fmt: skip
            lines += _table(
                ["scorer", "history", "score", "retrieval", "allocate + read", "KV recompute",
                 "total wall", "total CPU", "edits", "positions", "recompute ms / position"],
                rows,
            )  # fmt: skip
        if r.get("ingest"):
            ing = r["ingest"]
            lines += ["", "Ingest through `Session.append_ids` (GistNet + store + retrieval "
                      f"index), {res['plan']['ingest_chunk']:,}-token commits, local and S3 "
                      "alternating chunk by chunk:", ""]  # fmt: skip
            rows = []
            for b in ("local", "s3"):
                if b in ing:
                    v = ing[b]
                    rows.append([
                        b, f"{v['tokens']:,}", f"{v['tokens_per_s']:,.0f}", f"{v['gist_s']:.1f}",
                        f"{v['store_s']:.2f}", f"{v['store_tokens_per_s']:,.0f}",
                        f"{v['index_s']:.2f}", f"{v['puts']:,}", f"{v['bytes_stored']:,}",
                    ])  # fmt: skip
            lines += _table(
                ["backend", "tokens", "tokens/s", "GistNet s", "store s", "store tokens/s",
                 "index s", "PUTs", "bytes stored"],
                rows,
            )  # fmt: skip
            if "s3_over_local" in ing:
                rr = ing["s3_over_local"]
                lines.append(
                    f"\nS3 / local: {rr['tokens_per_s']:.2f}x tokens/s overall, "
                    f"{rr['store_tokens_per_s']:.2f}x for the store alone."
                )
        kv = r["kv_bytes_per_token"]
        lines += ["", f"Bytes on storage (listing the tree) vs the full KV cache of the same "
                  f"history ({kv['fp16/bf16']:,} B/token in fp16/bf16, {kv['fp32']:,} in fp32):",
                  ""]  # fmt: skip
        rows = []
        for n, v in r["bytes"].items():
            rows.append([
                _n(int(n)), f"{v['total']:,}", f"{v['bytes_per_token']:.1f}",
                f"{v['bytes_per_million_tokens'] / 2**20:.1f} MiB",
                _size(v["kv_fp16_bytes"]), f"{v['kv_over_tree_fp16']:,.0f}x",
                f"{v['kv_over_tree_fp32']:,.0f}x",
            ])  # fmt: skip
        lines += _table(
            ["history", "bytes", "bytes/token", "per 1M tokens", "KV cache fp16",
             "KV / tree (fp16)", "KV / tree (fp32)"],
            rows,
        )  # fmt: skip
        big = str(max(int(n) for n in r["bytes"]))
        kinds = sorted(r["bytes"][big]["by_kind"].items(), key=lambda x: -x[1])
        lines.append(f"\nAt {_n(int(big))}: " + ", ".join(f"{k} {v:,} B" for k, v in kinds) + ".")
        if r.get("rss"):
            lines += ["", "Memory of a fresh process that loads the model, opens the tree and "
                      f"chats ({res['plan']['rss_tokens']} tokens):", ""]  # fmt: skip
            rows = []
            for n, v in r["rss"].items():
                if "error" in v:
                    rows.append([_n(int(n)), f"error: {v['error']}", "", "", "", "", ""])
                    continue
                rows.append([
                    _n(int(n)), _f(v["rss_model_mib"], "{:.0f}"), _f(v["rss_open_mib"], "{:.0f}"),
                    _f(v["rss_chat_max_mib"], "{:.0f}"), _f(v["hwm_mib"], "{:.0f}"),
                    f"{v.get('store_cache_entries', 0):,} / {_size(v.get('store_cache_bytes', 0))}",
                    f"{v.get('index_vectors', 0):,} / {_size(v.get('index_bytes', 0))}",
                ])  # fmt: skip
            lines += _table(
                ["history", "RSS after model load MiB", "after session open", "max during chat",
                 "peak (VmHWM)", "store LRU entries / bytes", "retrieval index vectors / bytes"],
                rows,
            )  # fmt: skip
        lines.append(
            "\nTree builds (once, then cached under bench/results/tmp/systems): "
            + ", ".join(
                f"{_n(int(n))} {v['build_s']:.0f} s ({v['build_tokens_per_s']:,.0f} tokens/s"
                f"{', cached' if v.get('cached') else ''})"
                for n, v in r["builds"].items()
            )
            + "."
        )
    lines.append(f"\nTotal benchmark time: {res['seconds'] / 60:.1f} min.")
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(res["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        r = res["models"][model]
        ns = [int(n) for n in r["decode"]]
        ds = [r["decode"][str(n)] for n in ns]
        series = [
            ("decode step, wall median", "o-", [_get(d, "decode", "median_ms") for d in ds]),
            ("decode step, wall p90", "v:", [_get(d, "decode", "p90_ms") for d in ds]),
            ("decode step, CPU median", "^-", [_get(d, "decode_cpu", "median_ms") for d in ds]),
            ("amortized incl. refocus, wall", "s--", [d["amortized_ms_per_token"] for d in ds]),
        ]
        top = 0.0
        for label, style, ys in series:
            ax.plot(ns, [np.nan if y is None else y for y in ys], style, label=label)
            top = max([top] + [y for y in ys if y is not None])
        for n, d in zip(ns, ds, strict=True):
            pos = d["refocus_recomputed_positions"]
            if d["amortized_ms_per_token"] is not None:
                ax.annotate(
                    f"{sum(p > 1 for p in pos)}/{len(pos)} refocus\nrecomputed",
                    (n, d["amortized_ms_per_token"]),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=7,
                )
        ax.set_xscale("log")
        ax.set_ylim(0, top * 1.2 or 1)
        ax.set_xlabel("history length (tokens)")
        ax.set_ylabel("ms per token")
        ax.set_title(f"{r['base']}, window {res['plan']['window']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig.suptitle("Decode latency per token vs history length (1 CPU thread)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(res: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "systems.json",
        "md": out_dir / "systems.md",
        "png": out_dir / "systems_latency.png",
    }
    paths["json"].write_text(json.dumps(res, indent=2, default=_jsonable))
    cmd = "python -m bench systems" + (" --quick" if res.get("quick") else "")
    paths["md"].write_text(
        f"# Systems benchmarks\n\nProduced by `{cmd}` "
        f"({res['seconds'] / 60:.1f} min). Raw numbers: `systems.json`; plot: "
        "`systems_latency.png`.\n\n" + tables(res) + "\n"
    )
    plot(res, paths["png"])
    return paths


def _jsonable(x):
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    raise TypeError(type(x))


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m bench systems", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true", help="smaller histories (a few minutes)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: smollm2,tiny")
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--cache", default=str(CACHE), help="where built trees are kept")
    ap.add_argument("--no-s3", action="store_true", help="skip the S3 (moto) ingest")
    ap.add_argument("--no-rss", action="store_true", help="skip the RSS child processes")
    ap.add_argument("--build-only", action="store_true", help="only build the cached trees")
    ap.add_argument(
        "--report-only", action="store_true", help="redraw the .md and .png from the .json"
    )
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.rss_child:
        print(json.dumps(rss_child(json.loads(a.rss_child))))
        return
    if a.report_only:
        res = json.loads((Path(a.out_dir) / "systems.json").read_text())
        print(tables(res))
        paths = write(res, Path(a.out_dir))
        print("wrote " + ", ".join(str(p) for p in paths.values()))
        return
    plan = QUICK if a.quick else FULL
    plan = Plan(**{**asdict(plan), "s3": not a.no_s3, "rss": not a.no_rss})
    models = [m for m in a.models.split(",") if m]
    if a.build_only:
        torch.set_num_threads(1)
        for model in models:
            base, g = load_model(model)
            src, note = source_ids(base)
            for n in sorted(plan.histories.get(model, [])):
                path, info = build_tree(model, base, g, n, src, note, Path(a.cache))
                print(f"{model} {n:,}: {path} ({info['build_s']:.0f} s)")
        return
    res = run(plan, models, cache=Path(a.cache))
    res["quick"] = a.quick
    print(tables(res))
    paths = write(res, Path(a.out_dir))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
