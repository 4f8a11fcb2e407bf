"""Ingesting files and folders into a session's tree: resumable, one segment per chunk.

A file is tokenized whole, then appended in chunks (one commit each) tagged with the file's
sha256 and the chunk number. A re-run reads the tree's segments and skips every chunk already
committed, so an interrupted ingest continues where it stopped and never duplicates a file;
the tree itself is always at its last commit. A file whose content changed is new content and
is ingested again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mcruntime.session import Session, SessionError, render_document

CHUNK_TOKENS = 32768
_SNIFF = 8192


@dataclass
class IngestReport:
    files: int = 0
    skipped_done: int = 0
    skipped_binary: list[str] = field(default_factory=list)
    tokens: int = 0
    commits: int = 0


def is_binary(data: bytes) -> bool:
    return b"\x00" in data[:_SNIFF]


def walk(
    paths: Iterable[str], include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
) -> Iterator[Path]:
    """Files under ``paths`` (recursively, sorted, hidden folders skipped), filtered by globs."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    f = Path(root) / name
                    if _wanted(f, include, exclude):
                        yield f
        elif path.is_file():
            if _wanted(path, (), exclude):
                yield path
        else:
            raise SessionError(f"{p}: no such file or directory")


def _wanted(f: Path, include, exclude) -> bool:
    s = str(f)
    if include and not any(fnmatch.fnmatch(f.name, g) or fnmatch.fnmatch(s, g) for g in include):
        return False
    return not any(fnmatch.fnmatch(f.name, g) or fnmatch.fnmatch(s, g) for g in exclude)


def done_chunks(session: Session) -> dict[str, set[int]]:
    """sha256 -> chunk numbers already committed (from the tree's segment tags)."""
    out: dict[str, set[int]] = {}
    for seg in session.tree.segments():
        sha = chunk = None
        for tag in seg.tags:
            if tag.startswith("sha256="):
                sha = tag[7:]
            elif tag.startswith("chunk="):
                chunk = int(tag[6:].split("/")[0])
        if sha is not None and chunk is not None:
            out.setdefault(sha, set()).add(chunk)
    return out


def ingest_text(
    session: Session,
    text: str,
    source: str,
    *,
    done: dict[str, set[int]] | None = None,
    chunk_tokens: int = CHUNK_TOKENS,
    on_tokens: Callable[[int], None] | None = None,
    report: IngestReport | None = None,
) -> IngestReport:
    report = report or IngestReport()
    if not text.strip():
        raise SessionError(f"nothing to ingest from {source}: it is empty")
    sha = hashlib.sha256(text.encode()).hexdigest()
    have = (done if done is not None else done_chunks(session)).get(sha, set())
    ids = session.base.tokenizer.encode(render_document(text, source))
    n = max(1, -(-len(ids) // chunk_tokens))
    if len(have) >= n:
        report.skipped_done += 1
        if on_tokens:
            on_tokens(len(ids))
        return report
    for k in range(n):
        piece = ids[k * chunk_tokens : (k + 1) * chunk_tokens]
        if k not in have:
            session.append_ids(piece, source=source, tags=(f"sha256={sha}", f"chunk={k}/{n}"))
            report.commits += 1
            report.tokens += len(piece)
        if on_tokens:
            on_tokens(len(piece))
    report.files += 1
    return report


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text, or a ``SessionError`` saying why this is not text we can remember."""
    if is_binary(data):
        raise SessionError(f"{name} looks binary (it contains NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SessionError(
            f"{name} is not valid UTF-8 (byte {e.start}); convert it first"
        ) from None
