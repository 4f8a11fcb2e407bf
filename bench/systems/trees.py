"""The models and the histories they read: loading a model pair, the token ids histories are
made of, and the cached trees (built once through the runtime, forked for every run).

Latency does not depend on what the history says, so histories tile one stretch of held-out
text; building a 10M-token tree takes minutes, so trees are cached, keyed by what they depend on
(base model and GistNet weights, source ids), and every run works on a copy-on-write fork.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from bench.systems.plan import BUILD_CHUNK, FORCED_TEXT, MODELS
from mcruntime.hooks import Timings


def load_model(name: str):
    """(base, gistnet) for "smollm2" (the default base) or "tiny" (the test model)."""
    import mcmodels

    if name == "smollm2":
        base = mcmodels.load_base()
        g = mcmodels.GistNet.for_base(base, seed=0)
    elif name == "tiny":
        base = mcmodels.tiny_base(0)
        # a narrower GistNet than the default: the tiny model exists for speed, and 10M tokens
        # through a 256-wide encoder would take 15 minutes of this CPU
        g = mcmodels.GistNet.for_base(base, seed=0, hidden=64, heads=2)
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
    """Tokens ``start:stop`` of the endless history that repeats ``src``."""
    idx = np.arange(start, stop) % len(src)
    return src[idx]


def forced_ids(base) -> list[int]:
    """The forced answer's token ids, without any end-of-turn token."""
    ends = set(base.tokenizer.end_ids) | set(base.tokenizer.chat_parts().end_ids)
    return [i for i in base.tokenizer.encode(FORCED_TEXT * 4) if i not in ends]


def session_for(tree, base, gistnet, window: int, *, storage_options=None, hooks=None, **cfg):
    """A runtime session on ``tree`` (a URL or an open tree); ``cfg``: SessionConfig fields;
    ``hooks``: where it reports its spans (``mcruntime.hooks``)."""
    from mcmodels.decoding import DecodeConfig
    from mcruntime import Session, SessionConfig
    from mcruntime.hooks import NO_HOOKS

    cfg.setdefault("decoding", DecodeConfig.off())  # the probes force their tokens to the end
    return Session(
        tree,
        model=base,
        gistnet=gistnet,
        window=window,
        storage_options=storage_options,
        config=SessionConfig(**cfg),
        hooks=hooks or NO_HOOKS,
    )


def build_tree(
    model: str,
    base,
    gistnet,
    n: int,
    src: np.ndarray,
    src_note: str,
    cache: Path,
    chunk: int = BUILD_CHUNK,
):
    """A local tree of ``n`` tokens, built once and reused while the model, GistNet and history
    source stay the same. -> (path, info).

    Built as the runtime builds one: ``Session.append_ids`` in chunks of ``chunk`` tokens (one
    segment each: large by default, small for a history of many documents), GistNet gists, and
    the retrieval index kept current and stored with the tree (a committed chunk of keys per
    complete epoch, ``mcruntime.indexing``), so opening a session on it loads the index instead
    of rebuilding it from every token. A cached tree from before the index was stored (no
    ``index_chunks`` in its build record) is built again, so every run measures the same thing."""
    src_hash = hashlib.sha256(src.tobytes()).hexdigest()
    key = hashlib.sha256(  # by content: two models of one name never share a cached tree
        f"{base.weights_hash()}|{fingerprint(gistnet)}|{src_hash}".encode()
    ).hexdigest()[:10]
    seg = "" if chunk == BUILD_CHUNK else f"-seg{chunk}"
    path = cache / f"{model}-{n}{seg}-{key}.mc"
    done = path / "bench-build.json"
    if done.is_file():
        info = json.loads(done.read_text())
        if "index_chunks" in info:
            info["cached"] = True
            return path, info
        print(f"    {path.name} has no stored retrieval index: building it again")
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    timings = Timings()
    s = session_for(str(path), base, gistnet, 2048, hooks=timings)
    t0 = time.perf_counter()
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        s.append_ids(history(src, a, b), source="bench:history", tags=(f"chunk={a // chunk}",))
        print(f"    built {b:,}/{n:,} tokens", end="\r", flush=True)
    print()
    dt = time.perf_counter() - t0
    chunks = sum(name.startswith("retrieval/") for name in s.tree.objects())
    s.close()
    info = {
        "tokens": n,
        "build_s": dt,
        "build_tokens_per_s": n / dt,
        "gist_s": timings.total("gist"),
        "index_s": timings.total("index"),  # retrieval index: update + persist
        "index_chunks": chunks,
        "segments": -(-n // chunk),
        "history": src_note,
        "gistnet": fingerprint(gistnet),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    done.write_text(json.dumps(info, indent=2))
    info["cached"] = False
    return path, info


def fork_tree(src: Path, rundir: Path):
    """A writable copy-on-write fork of a cached tree (the cache itself never changes), and the
    pin the fork leaves in the cached tree (to remove when done). -> (tree, pin path)."""
    import mcstore

    dst = mcstore.fork(str(src), str(rundir / f"{src.name}-{uuid.uuid4().hex[:6]}"))
    pin = src / "refs" / "forks" / f"{dst.tree_id}.json"
    return dst, pin
