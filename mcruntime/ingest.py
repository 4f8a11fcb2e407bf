"""Ingesting files and folders into a session's tree: resumable, one segment per chunk.

A file is tokenized whole, then appended in chunks (one commit each) tagged with the sha256 of
its text and the token range the chunk holds (``sha256=…``, ``tokens=a-b/n``). A re-run reads
the tree's segments and appends only the token ranges not yet committed, so an interrupted
ingest continues where it stopped and never duplicates a file or a chunk (whatever chunk size
either run used); the tree itself is always at its last commit. Files are keyed by content: a
file whose content changed is new content and is ingested again, and a second file with the
same text is recognised as already present.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mcruntime.errors import InputError
from mcruntime.render import render_document

if TYPE_CHECKING:  # the session imports torch; walking and decoding files does not need it
    from mcruntime.session import Session

CHUNK_TOKENS = 32768
_SNIFF = 8192


@dataclass
class IngestReport:
    files: int = 0
    skipped_done: int = 0
    skipped: list[str] = field(default_factory=list)  # inputs that are not text, with why
    tokens: int = 0
    commits: int = 0
    inputs_done: int = 0  # inputs finished (ingested, already present or skipped)


def is_binary(data: bytes) -> bool:
    return b"\x00" in data[:_SNIFF]


def walk(
    paths: Iterable[str], include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
) -> Iterator[Path]:
    """Files under ``paths`` (recursively: a folder's files sorted, then its sub-folders; hidden
    folders skipped), filtered by globs. A glob matches a file's name, its path below the folder
    given (``sub/*.md``) or its whole path. A file named directly is only subject to excludes."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    f = Path(root) / name
                    if _wanted(f, f.relative_to(path), include, exclude):
                        yield f
        elif path.is_file() or _special(path):  # a pipe named on purpose (<(cmd)) is read
            if _wanted(path, Path(path.name), (), exclude):
                yield path
        else:
            try:
                os.stat(path)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise InputError(f"{p}: a loop of symbolic links", kind="missing") from None
            raise InputError(f"{p}: no such file or directory", kind="missing")


def _special(path: Path) -> bool:
    try:
        return not stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _wanted(f: Path, rel: Path, include, exclude) -> bool:
    names = (f.name, rel.as_posix(), f.as_posix())

    def hit(globs) -> bool:
        return any(fnmatch.fnmatch(n, g) for g in globs for n in names)

    return (not include or hit(include)) and not hit(exclude)


Done = dict[str, dict[int, list[tuple[int, int]]]]


def done_chunks(tree) -> Done:
    """sha256 of a text -> its token count ``n`` -> ranges ``[a, b)`` of it already committed
    in ``tree``, from the segment tags (``n`` tells a text ingested under another name, whose
    header, and so token offsets, differ)."""
    out: Done = {}
    for seg in tree.segments():
        sha = rng = None
        for tag in seg.tags:
            if tag.startswith("sha256="):
                sha = tag[7:]
            elif tag.startswith("tokens="):
                span, n = tag[7:].split("/")
                a, b = span.split("-")
                rng = (int(n), int(a), int(b))
        if sha is not None and rng is not None:
            out.setdefault(sha, {}).setdefault(rng[0], []).append(rng[1:])
    return out


def missing_ranges(
    n: int, have: Iterable[tuple[int, int]], chunk_tokens: int
) -> list[tuple[int, int]]:
    """The parts of ``[0, n)`` not covered by ``have``, cut into pieces of ``chunk_tokens``."""
    out: list[tuple[int, int]] = []
    pos = 0
    for a, b in [*sorted(have), (n, n)]:
        a, b = min(max(a, 0), n), min(b, n)
        while pos < a:
            stop = min(a, pos + chunk_tokens)
            out.append((pos, stop))
            pos = stop
        pos = max(pos, b)
    return out


def ingest_text(
    session: Session,
    text: str,
    source: str,
    *,
    done: Done | None = None,
    chunk_tokens: int = CHUNK_TOKENS,
    on_progress: Callable[[int, int], None] | None = None,
    report: IngestReport | None = None,
) -> IngestReport:
    """Append the parts of ``text`` not yet in the tree, one commit per chunk.

    ``done`` (from :func:`done_chunks`) is updated as chunks are committed, so one dict serves
    a whole run. ``on_progress(tokens_done, tokens_total)`` is called after every chunk.
    """
    report = report or IngestReport()
    if not text.strip():
        raise InputError(f"nothing to ingest from {source}: it is empty", kind="empty")
    if chunk_tokens < 1:
        raise InputError(f"chunk_tokens must be >= 1, not {chunk_tokens}", kind="argument")
    done = done if done is not None else done_chunks(session.tree)
    sha = hashlib.sha256(text.encode()).hexdigest()
    ids = session.base.tokenizer.encode(render_document(text, source))
    n = len(ids)
    versions = done.setdefault(sha, {})
    complete = any(not missing_ranges(m, r, m or 1) for m, r in versions.items())
    have = versions.setdefault(n, [])
    todo = [] if complete else missing_ranges(n, have, chunk_tokens)
    left = sum(b - a for a, b in todo)
    if on_progress:
        on_progress(n - left, n)
    if not todo:  # this text is in the tree already, maybe under another name
        report.skipped_done += 1
        return report
    for a, b in todo:
        name = part_name(source, a, b, n, chunk_tokens)
        session.append_ids(
            ids[a:b],
            source=name,
            tags=(f"sha256={sha}", f"tokens={a}-{b}/{n}"),
            message=f"ingest {name}",
        )
        have.append((a, b))
        report.commits += 1
        report.tokens += b - a
        left -= b - a
        if on_progress:
            on_progress(n - left, n)
    report.files += 1
    return report


def part_name(source: str, a: int, b: int, n: int, chunk_tokens: int) -> str:
    """The segment name of tokens ``[a, b)`` of an input of ``n`` tokens: the input's own name
    when it fits in one chunk, else the name and the range (one input is one segment unless
    it is longer than a chunk, and then each part says which part it is)."""
    return source if n <= chunk_tokens and a == 0 else f"{source} (tokens {a}-{b} of {n})"


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text, or an ``InputError`` saying why this is not text we can remember."""
    if is_binary(data):
        raise InputError(f"{name} looks binary (it contains NUL bytes)", kind="binary")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{name} is not valid UTF-8 (byte {e.start}); convert it first", kind="not UTF-8"
        ) from None


# ---- many inputs: what the `mc ingest` command drives ---------------------------------------


@dataclass
class Input:
    """A text input found by :func:`scan`: a file (read again when ingested, so a large folder
    is never held in memory) or stdin (kept, it cannot be read twice)."""

    name: str
    size: int
    data: bytes | None = None

    def text(self) -> str:
        try:
            data = self.data if self.data is not None else Path(self.name).read_bytes()
        except OSError as e:
            raise InputError(f"{self.name} cannot be read ({e.strerror or e})", "unreadable") from e
        text = decode_text(data, self.name)
        if not text.strip():
            raise InputError(f"{self.name} is empty", kind="empty")
        return text


@dataclass
class Scan:
    inputs: list[Input] = field(default_factory=list)
    skipped: list[InputError] = field(default_factory=list)  # not text: binary, empty, …

    def nothing_to_ingest(
        self,
        paths: Iterable[str],
        filtered: bool = False,
        filters: str = "the include/exclude globs",
    ) -> InputError:
        """The error to raise when ``inputs`` is empty: one line saying why (``filters``: what
        the caller calls its filters, when ``filtered``)."""
        where = ", ".join("stdin" if p == "-" else str(p) for p in paths)
        if not self.skipped:
            hint = f" matching {filters}" if filtered else ""
            return InputError(f"no files{hint} to ingest in {where}", kind="no files")
        if len(self.skipped) == 1:
            e = self.skipped[0]
            return InputError(f"nothing to ingest: {e}", kind=e.kind)
        kinds: dict[str, int] = {}
        for e in self.skipped:
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
        counts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return InputError(
            f"no text to ingest in {where}: all {len(self.skipped)} files were skipped ({counts})",
            kind="no text",
        )


def scan(
    paths: Iterable[str],
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    *,
    stdin: BinaryIO | None = None,
    stdin_name: str = "stdin",
) -> Scan:
    """Walk ``paths`` (``"-"`` reads ``stdin``) and sort what is found into text inputs and
    skipped ones (binary, not UTF-8, empty, unreadable), without touching any tree.
    A path that does not exist raises ``InputError``."""
    out = Scan()

    def consider(inp: Input) -> None:
        try:
            inp.text()
        except InputError as e:
            out.skipped.append(e)
        else:
            out.inputs.append(inp)

    for p in paths:
        if p == "-":
            data = stdin.read() if stdin is not None else b""
            consider(Input(stdin_name, len(data), data))
            continue
        for f in walk([p], include, exclude):
            if f != Path(p) and not f.is_file() and _special(f):
                # found in a folder: reading a FIFO would wait for a writer for ever
                out.skipped.append(
                    InputError(
                        f"{f}: not a regular file (a pipe, socket or device)", kind="special"
                    )
                )
                continue
            try:
                size = f.stat().st_size
            except OSError:  # a dangling link: text() says it cannot be read
                size = 0
            consider(Input(str(f), size))
    return out


def ingest_inputs(
    session: Session,
    inputs: list[Input],
    *,
    chunk_tokens: int = CHUNK_TOKENS,
    report: IngestReport | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_skip: Callable[[InputError], None] | None = None,
) -> IngestReport:
    """Ingest every input not yet in the tree (see :func:`ingest_text`). ``on_progress(bytes)``
    reports how far through ``inputs`` (by size) the ingest is, after every chunk; an input
    that stopped being text since the scan is skipped (``on_skip``)."""
    report = report or IngestReport()
    done = done_chunks(session.tree)
    base = 0
    for inp in inputs:
        try:
            text = inp.text()
        except InputError as e:
            report.skipped.append(str(e))
            if on_skip:
                on_skip(e)
        else:

            def tokens_done(k: int, n: int, base=base, size=inp.size) -> None:
                if on_progress:
                    on_progress(base + round(size * k / max(1, n)))

            ingest_text(
                session,
                text,
                inp.name,
                done=done,
                chunk_tokens=chunk_tokens,
                on_progress=tokens_done,
                report=report,
            )
        base += inp.size
        report.inputs_done += 1
        if on_progress:
            on_progress(base)
    return report
