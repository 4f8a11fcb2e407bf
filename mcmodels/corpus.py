"""The offline training corpus: text already on this machine, plus optional model-made text.

Sources (whatever exists here; CI machines may have a different set, so nothing may depend on the
exact contents): the running Python's standard-library source, ``/usr/share/doc/*/changelog*``
(gzipped or not), ``/usr/share/common-licenses``, English man pages (roff stripped to text), and
optionally text sampled from the base model itself.

A corpus folder holds ``docs.jsonl`` (one document a line: name, source, split, sha256, text) and
``manifest.json`` (file list with sha256 and split, plus ``manifest_hash``: the sha256 of the
sorted (name, sha256) list, which results record). Token ids are cached per tokenizer binding in
``tokens-<hash12>.npz``.

Split, deterministic by the document's name: sha256(name) mod 100 < 5 → ``test`` (held out:
evaluation only, training never sees it), < 10 → ``dev`` (steering during training), else
``train``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import numpy as np

from mcmodels.errors import CorpusError

SPLITS = ("train", "dev", "test")


def split_of(name: str) -> str:
    b = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 100
    return "test" if b < 5 else "dev" if b < 10 else "train"


def default_corpus_dir() -> Path:
    from mcmodels.base import cache_root

    return cache_root() / "corpus" / "default"


_ROFF_LINE = re.compile(r"^\.(\\\"|\S+)\s?(.*)$")
_ROFF_ESC = re.compile(r"\\f[BIRP1-4]|\\f\(..|\\\(..|\\\*\(..|\\\*.|\\s[+-]?\d|\\[&|^%ec0]|\\-")


_SKIP = {
    "ig",
    "de",
    "ds",
    "nr",
    "so",
    "tr",
    "ft",
    "in",
    "ta",
    "ll",
    "ne",
    "fi",
    "nf",
    "ad",
    "na",
    "hy",
    "nh",
    "RS",
    "RE",
    "PD",
}
_BREAK = {"PP", "LP", "P", "sp", "br", "TP", "IP"}


def roff_to_text(src: str) -> str:
    """Crude man-page rendering: drop comments and layout requests, keep the text arguments."""
    out = []
    for line in src.splitlines():
        m = _ROFF_LINE.match(line)
        if not m:
            out.append(line)
            continue
        macro, rest = m.group(1), m.group(2)
        if macro.startswith('\\"') or macro in _SKIP:
            continue
        if macro in _BREAK:
            out.append("")
            if rest:
                out.append(rest.replace('"', ""))
        elif macro in ("SH", "SS"):
            out.append("\n" + rest.strip('"').upper())
        else:  # font/formatting macros (B, I, BR, ...), TH: keep their text
            out.append(rest.replace('"', ""))
    text = _ROFF_ESC.sub("", "\n".join(out)).replace("\\e", "\\")
    return re.sub(r"\n{3,}", "\n\n", text)


def read_text_file(path: Path) -> str | None:
    """A source file's text (gunzipped if ``.gz``; UTF-8, else Latin-1), None if unreadable."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def discover(
    sources: tuple[str, ...] = ("python", "changelogs", "licenses", "man"),
) -> Iterator[tuple[str, str, Path]]:
    """Yield ``(name, source_kind, path)`` for candidate files on this machine, sorted."""
    if "python" in sources:
        std = Path(sysconfig.get_paths()["stdlib"])
        if std.is_dir():
            for p in sorted(std.rglob("*.py")):
                rel = p.relative_to(std).as_posix()
                if (
                    rel.startswith(
                        ("site-packages/", "test/", "idlelib/idle_test/", "lib2to3/tests/")
                    )
                    or "/tests/" in rel
                ):
                    continue
                yield f"python/{rel}", "python-stdlib", p
    if "changelogs" in sources:
        for p in sorted(Path("/usr/share/doc").glob("*/changelog*")):
            if p.is_file():
                yield f"changelog/{p.parent.name}/{p.name.removesuffix('.gz')}", "changelog", p
    if "licenses" in sources:
        for p in sorted(Path("/usr/share/common-licenses").glob("*")):
            if p.is_file():
                yield f"license/{p.name}", "license", p
    if "man" in sources:
        for p in sorted(Path("/usr/share/man").glob("man[1-8]/*")):
            if p.is_file():
                yield f"man/{p.parent.name}/{p.name.removesuffix('.gz')}", "man", p


@dataclass
class Corpus:
    """A built corpus folder (see the module doc)."""

    root: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.root / "manifest.json").read_text())

    @property
    def manifest_hash(self) -> str:
        return self.manifest["manifest_hash"]

    def docs(self, split: str | None = None) -> Iterator[dict]:
        with open(self.root / "docs.jsonl", encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                if split is None or d["split"] == split:
                    yield d

    def tokens(self, tokenizer, split: str, *, min_tokens: int = 0) -> list[tuple[str, np.ndarray]]:
        """``[(name, int32 ids)]`` for one split, cached per tokenizer binding."""
        tag = tokenizer.binding_hash()[:12]
        path = self.root / f"tokens-v2-{tag}-{split}.npz"
        if not path.is_file():
            names, arrays = [], []
            for d in self.docs(split):
                names.append(d["name"])
                arrays.append(np.asarray(tokenizer.encode(d["text"]), dtype=np.int32))
            offsets = np.cumsum([0] + [len(a) for a in arrays]).astype(np.int64)
            flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
            names_json = np.frombuffer(json.dumps(names).encode(), dtype=np.uint8)
            np.savez(tmp, ids=flat, offsets=offsets, names_json=names_json)  # no pickle
            os.replace(tmp, path)
        with np.load(path, allow_pickle=False) as z:
            ids, off = z["ids"], z["offsets"]
            names = json.loads(bytes(z["names_json"]).decode())
        out = []
        for i, n in enumerate(names):
            a = ids[off[i] : off[i + 1]]
            if len(a) >= min_tokens:
                out.append((str(n), a))
        return out


def build_corpus(
    out_dir=None,
    *,
    sources: tuple[str, ...] = ("python", "changelogs", "licenses", "man"),
    max_docs: int | None = None,
    max_mb: float = 64.0,
    min_chars: int = 2000,
    extra_texts: list[tuple[str, str]] | None = None,
    force: bool = False,
    progress: bool = True,
) -> Corpus:
    """Gather the corpus into ``out_dir`` (default ``$MC_CACHE/corpus/default``); reuse it if built.

    ``extra_texts``: additional ``(name, text)`` documents (e.g. model-generated text).
    Files are taken in sorted order until ``max_docs`` or ``max_mb`` of text.
    """
    root = Path(out_dir) if out_dir else default_corpus_dir()
    if (root / "manifest.json").is_file() and not force:
        return Corpus(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"docs.jsonl.tmp{os.getpid()}"
    cands = _round_robin(discover(sources))
    it = cands
    if progress:
        from tqdm import tqdm

        it = tqdm(cands, desc="corpus", unit="file")
    with open(tmp, "w", encoding="utf-8") as f:
        docs = _DocsFile(f)
        for name, kind, path in it:
            if (max_docs and len(docs.files) >= max_docs) or docs.total >= max_mb * 1e6:
                break
            text = _doc_text(path, kind, min_chars)
            if text is not None:
                docs.add(name, kind, text, path)
        for name, text in extra_texts or []:
            docs.add(name, "generated", text)
    if not docs.files:
        raise CorpusError(f"no text found for the corpus (sources: {', '.join(sources)})")
    os.replace(tmp, root / "docs.jsonl")
    for old in root.glob("tokens-*.npz"):
        old.unlink()
    _write_manifest(root, sources, docs.files, docs.total)
    return Corpus(root)


def _round_robin(cands) -> list:
    """The candidates round-robin over their source kinds, so a size cap keeps every kind
    of text."""
    by_kind: dict[str, list] = {}
    for c in cands:
        by_kind.setdefault(c[1], []).append(c)
    return [c for group in zip_longest(*by_kind.values()) for c in group if c is not None]


def _doc_text(path: Path, kind: str, min_chars: int) -> str | None:
    """A candidate file's text (man pages as plain text), or None if too short for a doc."""
    text = read_text_file(path)
    if not text:
        return None
    if kind == "man":
        text = roff_to_text(text)
    return text if len(text) >= min_chars else None


class _DocsFile:
    """``docs.jsonl`` being written, and the manifest rows of the documents it holds."""

    def __init__(self, f):
        self.f, self.files, self.total = f, [], 0

    def add(self, name: str, kind: str, text: str, path="") -> None:
        sha = hashlib.sha256(text.encode()).hexdigest()
        rec = {
            "name": name,
            "source": kind,
            "path": str(path),
            "split": split_of(name),
            "sha256": sha,
        }
        self.f.write(json.dumps({**rec, "text": text}, ensure_ascii=False) + "\n")
        self.files.append({**rec, "chars": len(text)})
        self.total += len(text)


def _write_manifest(root: Path, sources, files: list[dict], total: int) -> None:
    mh = hashlib.sha256(
        "\n".join(
            f"{d['name']}\t{d['sha256']}" for d in sorted(files, key=lambda d: d["name"])
        ).encode()
    ).hexdigest()
    manifest = {
        "manifest_hash": mh,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sources": list(sources),
        "n_docs": len(files),
        "chars": total,
        "splits": {s: sum(1 for d in files if d["split"] == s) for s in SPLITS},
        "files": files,
    }
    (root / "manifest.json.tmp").write_text(json.dumps(manifest, indent=1))
    os.replace(root / "manifest.json.tmp", root / "manifest.json")


def corpus_from_texts(out_dir, texts: list[tuple[str, str]]) -> Corpus:
    """A corpus from given ``(name, text)`` pairs only (tests, custom data)."""
    return build_corpus(
        out_dir, sources=(), extra_texts=texts, min_chars=0, force=True, progress=False
    )


def generate_texts(
    base, n_docs: int, n_tokens: int, *, seed: int = 0, temperature: float = 1.0
) -> list[tuple[str, str]]:
    """Sample ``n_docs`` texts of ``n_tokens`` tokens from the base model itself (KV-cached)."""
    import torch

    prompts = [
        "Chapter 1\n\n",
        "# Notes\n\n",
        "def main():\n",
        "Changelog\n\n",
        "Dear friend,\n\n",
        "The history of",
        "Question: ",
        "README\n\n",
    ]
    out = []
    g = torch.Generator().manual_seed(seed)
    tok = base.tokenizer
    for i in range(n_docs):
        ids = tok.encode(prompts[i % len(prompts)])
        with torch.no_grad():
            o = base.forward_ids(ids, last_k=1)
            new = []
            pos = len(ids)
            for _ in range(n_tokens):
                p = torch.softmax(o.logits[0, -1].float() / temperature, -1)
                nxt = int(torch.multinomial(p.cpu(), 1, generator=g))
                new.append(nxt)
                if pos + 1 >= base.max_positions:
                    break
                o = base.forward_ids([nxt], torch.tensor([[pos]]), cache=o.cache, last_k=1)
                pos += 1
        out.append((f"generated/{base.name}/s{seed}-{i}", tok.decode(ids + new)))
    return out
