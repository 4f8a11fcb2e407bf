"""The commit log: records, the head, tags.

A version exists once its record ``log/<n>.json`` does; records are written put-if-absent, so
two writers racing for version n cannot both win, and a record is never rewritten, so a
handle may cache every record it has read. Versions are dense (1, 2, 3, ...), which lets the
head be found from a hint with O(log n) existence probes instead of a listing.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import format as F
from .backend import Backend
from .errors import (
    CommitConflict,
    CommitUnknown,
    CorruptTree,
    InvalidArgument,
    StoreAccessError,
    TreeExists,
    VersionNotFound,
    damaged,
)

TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RECORD_BYTES = 16 * 2**20  # a commit record is a few hundred bytes; overrides make it grow
SMALL_BYTES = 2**16  # the head hint, a tag, a pin
MAX_COUNT = 2**48  # tokens, segments, heap bytes: far beyond any tree, far below int64
MAX_SEGMENT_TEXT = 2**16  # bytes of one segment's source and tags (enforced on append)
_GSET = re.compile(r"^([0-9a-f]{16})?$")
_DELTA = re.compile(r"^tail/\d{20}-[0-9a-f]{1,32}\.bin$")
_BLOB = {"binding": re.compile(r"^meta/binding-[0-9a-f]{24}\.json$"),
         "objects": re.compile(r"^meta/objects-[0-9a-f]{24}\.json$")}  # fmt: skip
_ARRAY = r"(tokens|seg_start|seg_time|seg_end|seg_heap|(gists|gistver|created|flags)_\d{1,2})"
_OVERRIDE_KEY = re.compile(rf"^{_ARRAY}(\.[0-9a-f]{{16}})?/\d{{1,15}}$")
_STAGE = re.compile(r"^stage/[A-Za-z0-9_-]{1,64}/[a-z0-9_]+(\.[0-9a-f]{16})?/\d{1,15}$")
_REDACT = re.compile(r"^redact/\d{20}-[0-9a-f]{12}/[a-z0-9_]+(\.[0-9a-f]{16})?/\d{1,15}$")


@dataclass(frozen=True)
class LogEntry:
    version: int
    time: int
    message: str | None
    length: int
    parent: int


@dataclass
class Snapshot:
    """One commit record, read as the state of the tree at that version."""

    rec: dict

    @property
    def version(self) -> int:
        return self.rec["version"]

    @property
    def length(self) -> int:
        return self.rec["length"]

    @property
    def nseg(self) -> int:
        return self.rec["nseg"]

    @property
    def nheap(self) -> int:
        return self.rec["nheap"]

    @property
    def gset(self) -> str:
        return self.rec["gset"]

    @property
    def override(self) -> dict[str, str]:
        return self.rec.get("override") or {}

    @property
    def redact(self) -> dict[str, str]:
        """Complete shards rewritten by a redaction: ``<array>/<k>`` -> the rewritten copy.
        Carried by every later record (see ``mcstore.redact``)."""
        return self.rec.get("redact") or {}

    @property
    def redacted(self) -> int:
        """The newest version that redacted rows (0: none): every version before it may hold
        forgotten bytes, and ``purge`` expires them."""
        return self.rec.get("redacted") or 0

    @property
    def extent(self) -> F.Extent:
        r = self.rec
        return F.Extent(r["length"], r["nseg"], r["nheap"], r["gset"])

    @property
    def tail_from(self) -> int:
        return self.rec["tail_from"]

    def references(self) -> set[str]:
        """Objects this record names directly (itself, its delta, staged shards, the binding
        and object-map blobs); the object map's entries are one level further."""
        r = self.rec
        keys = {F.log_key(self.version)}
        if r.get("delta"):
            keys.add(r["delta"]["path"])
        keys.update(e["path"] for e in r.get("chain") or ())
        keys.update(self.override.values())
        keys.update(self.redact.values())
        keys.update(r[k] for k in ("binding", "objects") if r.get(k))
        return keys


class CommitLog:
    """The records of one tree that this handle has read or written, by version."""

    def __init__(self, be: Backend):
        self._be = be
        self._recs: dict[int, dict] = {}
        self.hint_seen = 0  # the head hint as the last put() read it

    def remember(self, rec: dict) -> None:
        self._recs[rec["version"]] = rec

    def record(self, version: int) -> dict:
        rec = self._recs.get(version)
        if rec is None:
            rec = read_record(self._be, version)
            self._recs[version] = rec
        return rec

    def records(self, versions: list[int]) -> list[dict]:
        need = [v for v in versions if v not in self._recs]
        if need:
            got = self._be.read_many([F.log_key(v) for v in need])
            for v in need:
                raw = got[F.log_key(v)]
                if raw is None:
                    expired = read_expired(self._be)
                    if v in expired:
                        raise expired.error(self._be.url, v)
                    raise damaged(
                        self._be.url,
                        F.log_key(v),
                        "is missing (commits are removed only by an expiry that lists them)",
                    )
                self._recs[v] = parse_record(self._be, v, raw)
        return [self._recs[v] for v in versions]

    def check_free(self, version: int) -> None:
        """CommitConflict if ``version`` is taken (a cheap early check; the put decides)."""
        if self._be.exists(F.log_key(version)):
            raise CommitConflict(
                f"{self._be.url}: version {version} was committed by another writer while this "
                f"handle is at {version - 1}; nothing was written: call refresh() and retry"
            )

    def put(self, rec: dict) -> dict:
        """Commit ``rec`` (put-if-absent) and return it as a reader will parse it.

        First the head hint: if it says this version was committed already while its record
        is missing, that record was lost, and taking its number again would hide the loss
        (CorruptTree). Then the PUT, settled by :func:`put_new`: a PUT can land while its
        response is lost (the client's retry then finds the name taken, or every retry
        fails), so what the record name holds afterwards decides: our ``nonce`` means
        committed, another writer's means CommitConflict; nothing there re-raises the PUT's
        error (nothing landed); unreadable raises CommitUnknown."""
        version = rec["version"]
        key = F.log_key(version)
        self.hint_seen = read_hint(self._be)
        if self.hint_seen >= version and not self._be.exists(key):
            raise CorruptTree(
                f"{self._be.url}: log/head says version {self.hint_seen} was committed but "
                f"commit record {key} is missing: a commit record was lost, and committing "
                "would take its version again; restore the log from a copy"
            )
        nonce = rec.get("nonce")
        if not put_new(self._be, key, F.encode_record(rec), lambda raw: _nonce(raw) == nonce):
            raise CommitConflict(
                f"{self._be.url}: another writer committed version {version} first; this append "
                "was not committed (nothing lost): call refresh() and retry"
            )
        rec = json.loads(F.encode_record(rec))
        rec.pop("crc")
        self._recs[version] = rec
        return rec


def _nonce(raw: bytes) -> str | None:
    try:
        v = json.loads(raw)
    except ValueError:
        return None
    return v.get("nonce") if isinstance(v, dict) else None


def put_new(be: Backend, key: str, data: bytes, ours: Callable[[bytes], bool]) -> bool:
    """``put_if_absent`` whose outcome is read back whenever it is in doubt. -> True if the
    object at ``key`` is now ours (``ours(bytes)`` says so: a nonce, a tree id), False if it
    is another writer's.

    A PUT can land while its response is lost. s3fs then retries, and the retry finds the
    name taken (412) by our own object; or every retry fails, and the error says nothing
    about whether the first attempt landed. Either way the object is read back before
    anything is said: ours is success; nothing there means the PUT did not land and its own
    error is raised; if the read fails too, CommitUnknown (the outcome cannot be known now).
    """
    failure: BaseException | None = None
    try:
        if be.put_if_absent(key, data):
            return True
    except (StoreAccessError, OSError) as e:
        failure = e
    try:
        there = be.read(key, limit=RECORD_BYTES)
    except FileNotFoundError:
        if failure is not None:
            raise failure from None
        return False
    except (StoreAccessError, OSError) as e:
        cause = failure or e
        raise CommitUnknown(
            f"{be.url}: whether {key} was written is unknown: the PUT failed "
            f"({type(cause).__name__}) and reading it back failed ({type(e).__name__})"
        ) from cause
    return ours(there)


def parse_record(be: Backend, version: int, raw: bytes) -> dict:
    try:
        rec = F.decode_record(raw)
        check_record(rec, version)
    except ValueError as e:
        raise CorruptTree(
            f"{be.url}: commit record {F.log_key(version)} is not intact ({e}); the tree cannot "
            "be read at or after that version: restore the object from a copy"
        ) from None
    return rec


def check_record(rec: dict, version: int) -> None:
    """ValueError naming the field if a record is not one this store could have written:
    every count in range and consistent, every key inside the tree's own namespace. A record
    carries a checksum, but whoever can write the tree can recompute it; what a record names
    is used as object keys and allocation sizes, so it is checked, not trusted."""

    def count(name: str, hi: int = MAX_COUNT) -> int:
        v = rec.get(name)
        if type(v) is not int or not 0 <= v <= hi:
            raise ValueError(f"{name} = {v!r} is out of range")
        return v

    if rec.get("version") != version:
        raise ValueError(f"version = {rec.get('version')!r}, expected {version}")
    count("parent", version - 1)
    length = count("length")
    nseg = count("nseg", length)
    count("nheap", nseg * MAX_SEGMENT_TEXT)
    tail_from = count("tail_from", version)
    if tail_from < 1:
        raise ValueError("tail_from = 0 is out of range")
    if not isinstance(rec.get("gset"), str) or not _GSET.match(rec["gset"]):
        raise ValueError(f"gset = {rec.get('gset')!r} is not a gist set name")
    d = rec.get("delta")
    if d is not None:
        if not isinstance(d, dict) or not _DELTA.match(str(d.get("path"))):
            raise ValueError(f"delta = {d!r} is not a tail object of this tree")
        _check_size_crc(d, "delta")
    _check_chain(rec.get("chain", []))
    for k, pat in _BLOB.items():
        if rec.get(k) is not None and not pat.match(str(rec[k])):
            raise ValueError(f"{k} = {rec[k]!r} is not a meta object of this tree")
    _check_shard_map(rec, "override", _STAGE, "a staged shard")
    _check_shard_map(rec, "redact", _REDACT, "a redacted shard")
    if rec.get("redacted") is not None:
        count("redacted", version)


def _check_chain(chain) -> None:
    if not isinstance(chain, list) or len(chain) > 64:
        raise ValueError("chain is not a short list")
    for e in chain:
        if not isinstance(e, dict) or not _DELTA.match(str(e.get("path"))):
            raise ValueError(f"chain entry {e!r} is not a tail object of this tree")
        for k in ("to", "since"):
            x = e.get(k)
            if x is None and k == "since":
                continue
            if (
                not isinstance(x, list)
                or len(x) != 4
                or any(type(c) is not int or not 0 <= c <= MAX_COUNT for c in x[:3])
                or not _GSET.match(str(x[3]))
            ):
                raise ValueError(f"chain entry {k} = {x!r} is not an extent")
        _check_size_crc(e, "chain entry")


def _check_size_crc(obj: dict, what: str) -> None:
    if type(obj.get("size")) is not int or not 0 <= obj["size"] <= 2**40:
        raise ValueError(f"{what} size = {obj.get('size')!r} is out of range")
    if type(obj.get("crc")) is not int:
        raise ValueError(f"{what} crc = {obj.get('crc')!r} is not a checksum")


def _check_shard_map(rec: dict, field: str, path_pattern, what: str) -> None:
    """``field`` maps ``<array>/<k>`` to ``what``'s path of this tree, or is absent."""
    m = rec.get(field) or {}
    if not isinstance(m, dict):
        raise ValueError(f"{field} is not a map")
    for key, path in m.items():
        if not _OVERRIDE_KEY.match(str(key)) or not path_pattern.match(str(path)):
            raise ValueError(f"{field} {key!r} -> {path!r} is not {what} of this tree")


def read_record(be: Backend, version: int) -> dict:
    try:
        raw = be.read(F.log_key(version), limit=RECORD_BYTES)
    except FileNotFoundError:
        raise VersionNotFound(f"{be.url}: no version {version}") from None
    return parse_record(be, version, raw)


def read_hint(be: Backend) -> int:
    """The head hint (0 if there is none, or it is not a number)."""
    try:
        return int(be.read("log/head", limit=SMALL_BYTES).decode().strip())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return 0
    except IsADirectoryError:  # as in locate_head: never written by a store
        raise damaged(
            be.url, "log/head", "is a folder, not the head hint (removing it is safe)"
        ) from None


def write_head_hint(be: Backend, version: int, *, seen: int | None = None) -> None:
    """Raise the head hint to ``version``; never lower it. ``seen``: the hint as just read
    (else it is read here).

    The hint is evidence as well as a shortcut: a hint beyond the newest record means that
    records were lost (:func:`locate_head`, :meth:`CommitLog.put`), so it is written
    durably and only upwards; a gc or a slow writer that wrote back an older head would
    erase that evidence. Read-then-write is not atomic: two commits landing back to back
    can still leave it one behind, which only weakens the evidence (open lists past it)."""
    with contextlib.suppress(Exception):  # a failure leaves an older hint: open lists past it
        if version > (read_hint(be) if seen is None else seen):
            be.write("log/head", str(version).encode(), durable=True)


def find_head(be: Backend, known: int = 0) -> int:
    """Newest commit number (see :func:`locate_head`)."""
    return locate_head(be, known)[0]


def locate_head(be: Backend, known: int = 0) -> tuple[int, dict | None]:
    """(newest commit number, its record if it was read on the way).

    From the head hint (or ``known``), one listing of the log after it says whether anything
    is newer; only then does an O(log) probe run (commits are dense). Checked: a record
    beyond a gap, or a hint beyond the records (the newest records were deleted), is damage,
    never a reason to open an older version silently. Opening a tree whose hint is current
    costs three requests: the hint, the record, the listing."""
    hint, rec = 0, None
    head = known
    if head <= 0:
        try:
            hint = int(be.read("log/head", limit=SMALL_BYTES).decode().strip())
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            hint = 0
        except IsADirectoryError:  # never written by a store: the hint's place is taken
            raise damaged(
                be.url, "log/head", "is a folder, not the head hint (removing it is safe)"
            ) from None
        if hint > 0:
            try:
                rec, head = read_record(be, hint), hint
            except VersionNotFound:
                head = 0
        if head == 0 and be.exists(F.log_key(1)):
            head = _probe_from(be, 1)
    while True:
        later = [n for n in be.list_after("log", F.log_key(head)[4:]) if LOG_NAME.match(n)]
        if not later:
            break
        if _appears(be, F.log_key(head + 1)):  # newer commits than known: find the newest
            head, rec = _probe_from(be, head + 1), None
            continue
        raise damaged(
            be.url,
            F.log_key(head + 1),
            f"is missing but later commit records exist ({', '.join(later[:3])}…)",
        )
    if hint > head:
        raise CorruptTree(
            f"{be.url}: log/head says version {hint} exists but the newest commit record is "
            f"version {head}: commit records were deleted; restore the log from a copy"
        )
    return head, rec


LOG_NAME = re.compile(r"^\d{20}\.json$")


def _appears(be: Backend, key: str, tries: int = 4) -> bool:
    """Whether ``key`` exists, asking again a few times: a listing can show a record whose
    PUT is still completing (seen on SeaweedFS) a moment before a HEAD finds it; a record
    that stays missing while later ones exist is damage."""
    for i in range(tries):
        if be.exists(key):
            return True
        if i + 1 < tries:
            time.sleep(0.05 * 2**i)
    return False


def _probe_from(be: Backend, lo: int) -> int:
    """The last of the dense run of records that starts at existing record ``lo``."""
    step = 1
    while be.exists(F.log_key(lo + step)):
        lo += step
        step *= 2
    hi = lo + step  # absent
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if be.exists(F.log_key(mid)):
            lo = mid
        else:
            hi = mid
    return lo


# ---------------------------------------------------------------------- tags
def check_tag_name(url: str, name: str) -> None:
    if not TAG_RE.match(name or ""):
        raise InvalidArgument(f"{url}: bad tag name {name!r}; use letters, digits, '.', '_' or '-'")


def read_tag(be: Backend, name: str) -> int:
    key = f"refs/tags/{name}.json"
    try:
        raw = be.read(key, limit=SMALL_BYTES)
    except FileNotFoundError:
        raise VersionNotFound(f"{be.url}: no tag {name!r}") from None
    try:
        return int(F.decode_blob(raw)["version"])
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptTree(f"{be.url}: tag object {key} is not intact ({e}); re-tag it") from None


def write_tag(be: Backend, name: str, version: int, *, force: bool) -> None:
    """Point tag ``name`` at ``version``; an existing tag moves only with ``force``."""
    key = f"refs/tags/{name}.json"
    raw = F.encode_blob({"version": version, "time": time.time_ns()})
    if force:
        be.write(key, raw)
    elif not be.put_if_absent(key, raw):
        old = read_tag(be, name)
        if old != version:
            raise TreeExists(
                f"{be.url}: tag {name!r} already names version {old}; pick another name, "
                "or move the tag (force)"
            )


def fork_pins(be: Backend) -> list[int]:
    """Versions that forks of this tree started from (their shards are read from here)."""
    return [v for _, v in fork_pin_entries(be)]


def fork_pin_entries(be: Backend) -> list[tuple[str, int]]:
    """(the fork's URL, the version it started from) for each fork pinned on this tree."""
    out = []
    for n in be.listdir("refs/forks"):
        if n.endswith(".json"):
            try:
                pin = F.decode_blob(be.read(f"refs/forks/{n}", limit=SMALL_BYTES))
                out.append((str(pin.get("url", n[:-5])), int(pin["version"])))
            except (ValueError, KeyError, TypeError):
                raise damaged(be.url, f"refs/forks/{n}", "is not intact") from None
    return out


def delete_tag(be: Backend, name: str) -> None:
    be.delete([f"refs/tags/{name}.json"])


def list_tags(be: Backend) -> dict[str, int]:
    out = {}
    for n in be.listdir("refs/tags"):
        if n.endswith(".json"):
            out[n[:-5]] = read_tag(be, n[:-5])
    return out


# ---------------------------------------------------------------------- snapshot expiry
EXPIRED_KEY = "log/expired.json"


@dataclass(frozen=True)
class Expired:
    """Versions whose records a retention policy removed (``gc(keep_last=…, keep_since=…)``),
    as sorted disjoint ranges [a, b]; ``why`` says which policy, for the error a reader of an
    expired version gets. A version missing from the log and not listed here is damage."""

    ranges: tuple[tuple[int, int], ...] = ()
    why: str = ""

    def __contains__(self, version: int) -> bool:
        return any(a <= version <= b for a, b in self.ranges)

    def count(self) -> int:
        return sum(b - a + 1 for a, b in self.ranges)

    def union(self, versions: list[int], why: str) -> Expired:
        vs = sorted({v for a, b in self.ranges for v in range(a, b + 1)} | set(versions))
        ranges: list[list[int]] = []
        for v in vs:
            if ranges and ranges[-1][1] + 1 == v:
                ranges[-1][1] = v
            else:
                ranges.append([v, v])
        return Expired(tuple((a, b) for a, b in ranges), why)

    def error(self, url: str, version: int) -> VersionNotFound:
        return VersionNotFound(
            f"{url}: version {version} was expired by gc ({self.why}); its data is gone, "
            "later versions are intact"
        )


def read_expired(be: Backend) -> Expired:
    try:
        raw = be.read(EXPIRED_KEY, limit=RECORD_BYTES)
    except FileNotFoundError:
        return Expired()
    try:
        v = F.decode_blob(raw)
        ranges = tuple((int(a), int(b)) for a, b in v["ranges"])
        return Expired(ranges, str(v.get("why", "")))
    except (ValueError, KeyError, TypeError):
        raise damaged(be.url, EXPIRED_KEY, "is not intact") from None


def write_expired(be: Backend, expired: Expired) -> None:
    blob = {"ranges": [list(r) for r in expired.ranges], "why": expired.why, "time": time.time_ns()}
    be.write(EXPIRED_KEY, F.encode_blob(blob))
