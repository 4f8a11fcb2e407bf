"""The tree handle: reads (from ``TreeView``) plus every write, and the commit protocol.

Every change is one commit: complete shards first (``shards``), then the tail delta
(``tail``), then the commit record, put-if-absent (``records``); a writer that loses the race
for a version has changed nothing any reader can see, and retries after ``refresh()``.
Appends gist the nodes they complete (``gisting``); objects, flags and a regist are commits
too. One lock per handle serializes its commits and tail updates.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from . import format as F
from .backend import RESUME, concurrently
from .errors import (
    CommitConflict,
    CommitUnknown,
    InvalidArgument,
    ReadOnlyError,
    StoreAccessError,
    VersionNotFound,
)
from .gisting import GistFn, Gisting, gist_completed, restamp_gist_set, write_gist_set
from .nodes import FLAGS_OBJECT, segment_rows, updated_flags
from .objects import store_named
from .records import (
    MAX_SEGMENT_TEXT,
    Snapshot,
    check_tag_name,
    find_head,
    read_record,
    write_head_hint,
    write_tag,
)
from .redact import check_inside, normalised_edits, redaction_rows, rewritten
from .shards import (
    ensure_array_meta,
    put_shards,
    repair_staged,
    rewrite_missing,
    settle_inherited,
    write_ahead,
)
from .tail import entry, grow, plan_delta
from .view import TreeView


@dataclass(frozen=True)
class Unsettled:
    """A commit whose record PUT failed: whether it landed is not known yet. ``fingerprint``
    identifies the change (what was appended), so a repeat of it is recognised."""

    version: int
    nonce: str
    fingerprint: str | None


def fingerprint(*parts) -> str:
    """A hash of a change as the caller gave it (token arrays, sources, tags, objects,
    message), to recognise the same change asked for again."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(b"a" + str(p.dtype).encode() + p.tobytes())
        elif isinstance(p, bytes | bytearray):
            h.update(b"b" + hashlib.sha256(p).digest())
        else:
            h.update(b"j" + F.canonical_json(p))
    return h.hexdigest()


class Tree(TreeView):
    """One MegaContext tree at one URL. Create with :func:`create`, open with :func:`open`."""

    _unsettled: Unsettled | None = None  # the last commit, if its outcome is unknown

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._known_meta: set[str] = set()  # arrays whose zarr.json is known to exist
        self._adopted_meta: set[str] = set()  # of those, ones a crashed writer left (no commit yet)

    # ------------------------------------------------------------------ checks
    def _check_writable(self) -> None:
        if self.mode != "a" or self._pinned:
            why = "opened at a fixed version" if self._pinned else "opened read-only"
            raise ReadOnlyError(f"{self.url}: tree {why}; open it with mode='a' to change it")

    def _check_head(self, change: str | None = None) -> int | None:
        """Before a commit: settle this handle's last commit if its outcome was unknown, then
        check the next version is free. -> the version of that last commit when it did land
        and ``change`` (its fingerprint) is the same change again: a retry, which the caller
        answers with that version instead of storing the change twice."""
        landed = self._settle(change)
        if landed is not None:
            return landed
        self._log.check_free(self.version + 1)
        return None

    def _settle(self, change: str | None) -> int | None:
        """Whether the commit that raised :class:`CommitUnknown` (or whose record PUT failed)
        landed: its record carries our nonce. Until that is known this handle commits
        nothing (a new commit could store the same change twice)."""
        u = self._unsettled
        if u is None:
            return None
        try:
            rec = read_record(self._be, u.version)
        except VersionNotFound:
            return None  # not there: it did not land (a later commit of ours settles it)
        except (StoreAccessError, OSError) as e:
            raise self._unknown(u, e) from e
        self._unsettled = None
        if rec.get("nonce") != u.nonce:
            return None  # another writer's: ours did not land
        self._log.remember(rec)
        if self.version < u.version:
            self._snap = Snapshot(rec)  # the tail state follows the snapshot when read
        return u.version if change is not None and change == u.fingerprint else None

    def _unknown(self, u: Unsettled, e: BaseException) -> CommitUnknown:
        # the storage error's own advice ("nothing … changed") is not true here: left out
        why = str(e).replace(RESUME, "").rstrip("; ")
        return CommitUnknown(
            f"{self.url}: whether version {u.version} was committed is unknown: the storage "
            f"failed while its record was written and it could not be read back ({why}). "
            f"refresh() tells: the tree then shows version {u.version} with nonce {u.nonce} "
            "if it landed; repeating the same change on this handle is recognised and not "
            "stored twice",
            version=u.version,
            nonce=u.nonce,
        )

    # ------------------------------------------------------------------ flags
    def set_flags(self, level: int, indices: Iterable[int], flags: int, *, message=None) -> int:
        """Commit mutable flags (e.g. pinned=1, tagged=2) for nodes; flags=0 clears."""
        table = updated_flags(self._flags_table(), level, indices, flags)
        return self.commit_objects({FLAGS_OBJECT: table}, message=message or f"flags level {level}")

    # ------------------------------------------------------------------ tags
    def tag(self, name: str, version: int | None = None, *, force: bool = False) -> int:
        check_tag_name(self.url, name)
        if self.mode != "a":
            raise ReadOnlyError(f"{self.url}: opened read-only; open with mode='a' to tag")
        if version is None:
            version = self.version
        head = find_head(self._be, self.version)
        if not 1 <= int(version) <= head:
            raise VersionNotFound(f"{self.url}: no version {version} to tag (versions 1..{head})")
        self._log.record(int(version))  # must be intact
        write_tag(self._be, name, int(version), force=force)
        return int(version)

    # ------------------------------------------------------------------ objects
    def _store_objects(self, objects: dict[str, bytes | None] | None) -> str | None:
        if not objects:
            return self._snap.rec.get("objects")
        return store_named(self._be, self._blobs, self._snap.rec.get("objects"), objects)

    def commit_objects(self, objects: dict[str, bytes | None], message: str | None = None) -> int:
        """A commit that adds no tokens, only (replaces / deletes with None) named objects."""
        self._check_writable()
        change = fingerprint(
            "objects", message, {n: None if d is None else d.hex() for n, d in objects.items()}
        )
        with self._lock:
            landed = self._check_head(change)
            if landed is not None:
                return landed
            okey = self._store_objects(objects)
            return self._commit({}, self._snap.extent, message=message, objects=okey, change=change)

    # ------------------------------------------------------------------ append
    def append(
        self,
        tokens,
        *,
        gister: GistFn,
        source: str,
        tags: Iterable[str] = (),
        message: str | None = None,
        objects: dict[str, bytes | None] | None = None,
        written: dict[str, int] | None = None,
        now: int | None = None,
    ) -> int:
        """Append tokens as one segment; gist every node they complete; commit. -> version.

        ``written``: complete shards already written by :meth:`write_ahead` (maybe by other
        processes), which the commit then checks by checksum instead of writing; ``now``: the
        nodes' creation time (default: the commit's), so shards written ahead match."""
        return self.append_many(
            [(tokens, source, tags)],
            gister=gister,
            message=message,
            objects=objects,
            written=written,
            now=now,
        )

    def append_many(
        self,
        parts: Sequence[tuple[object, str, Iterable[str]]],
        *,
        gister: GistFn,
        message: str | None = None,
        objects: dict[str, bytes | None] | None = None,
        written: dict[str, int] | None = None,
        now: int | None = None,
        times: Sequence[int] | None = None,
    ) -> int:
        """Append several segments ``(tokens, source, tags)``, in order, in one commit (bulk
        ingest: one commit for many files). The tree reads exactly as if each had been
        appended on its own; only the log has one commit instead of ``len(parts)``.
        The gister sees every node the parts complete together, level by level. ``times``:
        each segment's own wall-clock time in ns (an import keeps when a text was first
        remembered); default: the commit's."""
        self._check_writable()
        if not parts:
            raise InvalidArgument(f"{self.url}: nothing to append")
        checked = [
            (self._checked_tokens(t), self._checked_source(s), list(tags)) for t, s, tags in parts
        ]
        times = self._checked_times(times, len(checked))
        change = fingerprint(
            "append",
            message,
            *([times] if times is not None else []),
            *[x for t, s, tags in checked for x in (t, s, tags)],
            object_hashes(objects),
        )
        with self._lock:
            landed = self._check_head(change)
            if landed is not None:
                return landed
            snap = self._snap
            now = time.time_ns() if now is None else int(now)
            how = Gisting(gister, len(self._gistnets()) - 1, now, snap.gset)
            new_rows: dict[str, np.ndarray] = {"tokens": np.concatenate([t for t, _, _ in checked])}
            gist_completed(
                self.url,
                self.geo,
                lambda name, a, b: self._rows(name, a, b, snap),
                snap.length,
                new_rows,
                how,
            )
            ext = self._add_segments(new_rows, checked, now, times)
            okey = self._store_objects(objects)
            return self._commit(
                new_rows, ext, message=message, objects=okey, now=now, written=written,
                change=change,
            )  # fmt: skip

    def _add_segments(self, new_rows: dict, checked: list, now: int, times) -> F.Extent:
        """Add the segment rows of the parts ``checked`` to ``new_rows``. -> the extent of
        the version they make."""
        snap = self._snap
        start, heap, segs = snap.length, snap.nheap, []
        for i, (toks, source, tags) in enumerate(checked):
            rows = segment_rows(start, heap, source, tags, now if times is None else times[i])
            if len(rows["seg_heap"]) > MAX_SEGMENT_TEXT:
                raise InvalidArgument(
                    f"{self.url}: source name and tags take {len(rows['seg_heap'])} bytes; "
                    f"at most {MAX_SEGMENT_TEXT} fit one segment"
                )
            segs.append(rows)
            start, heap = start + len(toks), heap + len(rows["seg_heap"])
        for name in segs[0]:
            new_rows[name] = np.concatenate([r[name] for r in segs])
        return F.Extent(start, snap.nseg + len(checked), heap, snap.gset)

    def _checked_times(self, times, n: int) -> list[int] | None:
        if times is None:
            return None
        times = [int(x) for x in times]
        if len(times) != n or any(x < 0 or x >= 2**63 for x in times):
            raise InvalidArgument(f"{self.url}: times must be one non-negative int64 per segment")
        return times

    def _checked_tokens(self, tokens) -> np.ndarray:
        toks = np.asarray(tokens)
        if toks.ndim != 1 or (toks.size and not np.issubdtype(toks.dtype, np.integer)):
            raise InvalidArgument(f"{self.url}: tokens must be a 1-D array of integers")
        if toks.size and (toks.min() < 0 or toks.max() > np.iinfo(np.int32).max):
            raise InvalidArgument(f"{self.url}: token ids must be in [0, 2**31)")
        if toks.size == 0:
            raise InvalidArgument(f"{self.url}: nothing to append (use commit_objects)")
        return toks.astype(np.int32)

    def _checked_source(self, source) -> str:
        if not isinstance(source, str):
            raise InvalidArgument(f"{self.url}: source must be a string")
        return source

    # ------------------------------------------------------------------ redact
    def redact(
        self,
        edits: Iterable[tuple[int, object]],
        *,
        gister: GistFn,
        objects: dict[str, bytes | None] | None = None,
        message: str | None = None,
    ) -> int:
        """Replace token runs ``(start, ids)`` in place (same lengths) and gist again every
        complete node above them, in one commit (``mcstore.redact``): from that version on
        no read returns the old tokens or gists. ``objects``: named objects to replace in
        the same commit (the caller's index of the old text). Older versions keep the old
        bytes until ``mcstore.purge``. -> the new version."""
        self._check_writable()
        checked = normalised_edits(self.url, edits)
        change = fingerprint(
            "redact", message, *[x for a, ids in checked for x in (a, ids)], object_hashes(objects)
        )
        with self._lock:
            landed = self._check_head(change)  # once: it settles an unknown outcome
            if landed is not None:
                return landed
            snap = self._snap
            check_inside(self.url, snap.length, checked)

            def read(name, a, b):
                return self._rows(name, a, b, snap)

            how = Gisting(gister, len(self._gistnets()) - 1, time.time_ns(), snap.gset)
            changes = redaction_rows(self.url, self.geo, read, snap.length, checked, how)
            shards, tails = rewritten(self.geo, snap.extent, read, self._tail_state(), changes)
            okey = self._store_objects(objects)
            return self._commit(
                {},
                snap.extent,
                message=message,
                objects=okey,
                consolidate=True,
                replaced=tails,
                redacted=shards,
                change=change,
            )

    def write_ahead(self, name: str, first: int, rows) -> dict[str, int]:
        """Write complete shards of array ``name`` (shard ``first`` on) before the append
        that commits them: bulk ingest spreads shard writes over workers, each opening the tree
        and writing what it computed. Uncommitted shards are invisible until that append and
        are protected from ``gc`` by its grace. -> checksums for ``append(written=…)``."""
        self._check_writable()
        ensure_array_meta(self._be, self.geo, name, self._known_meta, self._adopted_meta)
        return write_ahead(self._be, self.geo, name, int(first), np.asarray(rows))

    # ------------------------------------------------------------------ commit
    def _commit(
        self,
        new_rows: dict[str, np.ndarray],
        ext: F.Extent,
        *,
        message: str | None,
        objects: str | None,
        now: int | None = None,
        binding: str | None = None,
        consolidate: bool = False,
        replaced: dict[str, np.ndarray] | None = None,
        written: dict[str, int] | None = None,
        change: str | None = None,
        redacted: dict[str, bytes] | None = None,
    ) -> int:
        """Write shards, the tail delta and the commit record (put-if-absent) for a version
        of extent ``ext`` whose rows beyond the current version are ``new_rows``.

        ``redacted`` (a redaction; ``{}`` when only tail rows changed): complete shards
        rewritten whole, ``<array>/<k>`` -> bytes, which this and every later record point
        readers to instead of the canonical name.
        ``replaced`` (regist, fork) gives whole tails for arrays whose complete shards were
        already written; ``change``: the fingerprint of what the caller asked for, kept if
        the record PUT fails so that a repeat of the same change is recognised."""
        be, geo, snap = self._be, self.geo, self._snap
        version, nonce = snap.version + 1, uuid.uuid4().hex[:12]
        old_tail = self._tail_state()
        # the chain of ``snap`` (joined by _tail_state) and what this commit's delta covers
        since, chain, weight = plan_delta(
            geo, snap, self._tail.chain, ext, checkpoint=consolidate, max_chain=self.tail_chain
        )
        # overrides inherited from a writer that could not fix them: fix now, then drop
        override = settle_inherited(
            be, geo, snap.override, self._bases, self._reader.fixed_overrides
        )
        growth = grow(geo, snap.extent, ext, old_tail, new_rows, since=since, replaced=replaced)
        # 1. data: complete shards (put-if-absent: a shard name is never overwritten blindly)
        for name in {n for n, _, _ in growth.shards}:
            ensure_array_meta(be, geo, name, self._known_meta, self._adopted_meta)
        adopted = put_shards(be, geo, growth.shards, version, nonce, override, written)
        redact = self._write_redacted(redacted, version, nonce, override)
        # 2. the tail delta
        delta = self._tail.write_delta(version, nonce, growth.delta) if growth.delta else None
        if delta:
            chain = [*chain, entry(delta, ext, since, weight)]
        rec = self._record(
            version, nonce, ext, message=message, now=now, since=since, delta=delta, chain=chain,
            binding=binding, objects=objects,
        )  # fmt: skip
        rec.update(self._optional_fields(version, override, redact, redacted))
        # 3. the commit record, put-if-absent
        rec = self._put_record(rec, change)
        self._committed(rec, growth, override, adopted)
        return version

    def _write_redacted(self, redacted, version: int, nonce: str, override: dict) -> dict:
        """Write a redaction's rewritten shards under ``redact/``. -> the redact map the record
        carries (every later record carries it on); a redacted copy supersedes a staged one,
        so its ``override`` goes."""
        redact = dict(self._snap.redact)
        if redacted:
            paths = {key: f"redact/{version:020d}-{nonce}/{key}" for key in redacted}
            be = self._be
            concurrently(be, be.write, list(paths.values()), [redacted[k] for k in paths])
            redact.update(paths)
            for key in paths:
                override.pop(key, None)
        return redact

    def _record(self, version, nonce, ext, *, message, now, since, delta, chain, binding, objects):
        """The fields every commit record has; ``since`` None: this delta starts a chain."""
        snap = self._snap
        return {
            "version": version,
            "parent": snap.version,
            "time": now or time.time_ns(),
            "message": message,
            "length": ext.length,
            "nseg": ext.nseg,
            "nheap": ext.nheap,
            "tail_from": version if since is None else snap.tail_from,
            "delta": delta,
            "chain": chain,
            "gset": ext.gset,
            "binding": binding if binding is not None else snap.rec.get("binding"),
            "objects": objects,
            "tree": self._facts["tree_id"],
            "nonce": nonce,
        }

    def _optional_fields(self, version: int, override, redact, redacted) -> dict:
        """The record's fields that only some commits carry: staged-shard overrides, the
        redact map, and the version of the newest redaction."""
        snap, out = self._snap, {}
        if override:
            out["override"] = override
        if redact:
            out["redact"] = redact
        if redacted is not None or snap.redacted:
            out["redacted"] = version if redacted is not None else snap.redacted
        return out

    def _put_record(self, rec: dict, change: str | None) -> dict:
        """Put the record if absent. A failed PUT is read back before anything is said
        (records.put_new): a lost answer must not read as "nothing changed", so the handle
        remembers the commit as unsettled until it knows."""
        version = rec["version"]
        try:
            rec = self._log.put(rec)
        except (StoreAccessError, OSError) as e:
            self._unsettled = Unsettled(version, rec["nonce"], change)
            if isinstance(e, CommitUnknown):
                raise self._unknown(self._unsettled, e.__cause__ or e) from e
            raise
        if self._unsettled is not None and version >= self._unsettled.version:
            self._unsettled = None  # that version is now ours: the old PUT can never land
        return rec

    def _committed(self, rec: dict, growth, override: dict, adopted: list) -> None:
        """After the record is in: repair what the commit could not do before it, then move
        the handle to the new version."""
        be, geo, snap = self._be, self.geo, self._snap
        # repair canonical shards that were shadowed by an orphan
        self._reader.fixed_overrides |= repair_staged(be, geo, override, snap.override)
        # a gc may have deleted an adopted shard under us, or the metadata of an array whose
        # shards or zarr.json a crashed writer had begun (gc removes both when unreachable)
        new = Snapshot(rec)  # segments() decodes only the new segment
        reached = set(new.extent.arrays(geo.block))
        # an old zarr.json of an array no commit reached before, re-stamped: gc may have raced
        suspect = (reached - set(snap.extent.arrays(geo.block))) & self._adopted_meta
        if adopted:  # only a commit that adopted old objects can have raced a gc
            suspect |= {n for n, _, _ in growth.shards}
        if adopted or suspect:
            metas = [(f"arrays/{n}/zarr.json", F.array_metadata(geo, n)) for n in sorted(suspect)]
            rewrite_missing(be, [*adopted, *metas])
        self._adopted_meta -= reached  # a commit reaches them now: gc keeps them
        self._snap = new
        self._tail.advance(rec, growth.tail)
        write_head_hint(be, rec["version"], seen=self._log.hint_seen)

    # ------------------------------------------------------------------ regist
    def regist(self, gister: GistFn, binding: dict, *, gister_id=None, progress=None) -> int:
        """Recompute every gist with a new gister, level by level, resumably.

        ``binding`` is the caller's record of what built the tree (opaque to the store);
        ``gister_id`` names the new gister in ``gistnet_table()``. Complete shards of the new
        gist arrays are written under new names (a hash of the binding) as they are computed;
        a rerun after a crash skips the shards that exist. The new binding and gist set are
        committed at the end. Returns the new version."""
        self._check_writable()
        if self.same_binding(binding):
            return self.version
        gset = F.short_hash(binding)
        self._check_head()
        snap = self._snap
        table = [*self._gistnets(), gister_id]
        tails = write_gist_set(
            self._be,
            self.geo,
            lambda name, a, b: self._rows(name, a, b, snap),
            snap.length,
            Gisting(gister, len(table) - 1, time.time_ns(), gset),
            known_meta=self._known_meta,
            adopted_meta=self._adopted_meta,
            progress=progress,
        )
        bkey = self._blobs.write("binding", {"binding": binding, "gistnets": table})
        # shards written long ago (a long regist, or one resumed) look abandoned to gc:
        # re-stamped now, their age counts from this commit (StoreError if one is gone)
        restamp_gist_set(self._be, self.geo, F.Extent(snap.length, snap.nseg, snap.nheap, gset))
        with self._lock:
            self._check_head()
            if self._snap.version != snap.version:
                # this handle committed meanwhile: committing on top with the older snapshot's
                # length, segments and objects would drop that commit
                raise CommitConflict(
                    f"{self.url}: the tree moved to version {self.version} during regist; "
                    "run regist again (the gist shards it wrote are reused)"
                )
            return self._commit(
                {},
                F.Extent(snap.length, snap.nseg, snap.nheap, gset),
                message=f"regist {gset}",
                objects=snap.rec.get("objects"),
                binding=bkey,
                consolidate=True,
                replaced=tails,
            )

    # ------------------------------------------------------------------ fork
    def adopt(self, src: TreeView) -> int:
        """Make this new, empty fork of ``src`` hold ``src``'s version: one commit with its
        extent, binding, objects and tail (its complete shards are read from ``src`` in
        place, through this tree's fork bases). Used by :func:`mcstore.fork`."""
        self._check_writable()
        snap = src.snapshot
        with self._lock:
            self._check_head()
            if self.length or self.version != 1:
                raise InvalidArgument(f"{self.url}: only a new fork can adopt a version")
            override = {}
            # staged and redacted copies of the source's shards: the fork reads the bytes the
            # source reads (a redaction's, never the canonical name's it replaced)
            for key, path in {**snap.override, **snap.redact}.items():
                stage = f"stage/fork-{uuid.uuid4().hex[:12]}/{key}"
                self._be.write(stage, src.backend.read(path))
                override[key] = stage
            bkey = None
            if snap.rec.get("binding"):
                bkey = self._blobs.write("binding", src.blob(snap.rec["binding"]))
            okey = None
            m = src.objects_map()
            if m:
                for name, ent in m.items():
                    if not self._be.exists(ent["path"]):
                        self._be.write(ent["path"], src.read_object(name))
                okey = self._blobs.write("objects", m)
            # the base state the fork commit grows from: the source's gist set and shadowed
            # shards, no rows of its own (its complete shards are the bases')
            base_rec = {**self._snap.rec, "gset": snap.gset}
            if override:
                base_rec["override"] = override
            self._snap = Snapshot(base_rec)
            tail = {name: np.array(rows) for name, rows in src.tail_rows().items()}
            return self._commit(
                {},
                snap.extent,
                message=f"fork of {src.url} at version {snap.version}",
                objects=okey,
                binding=bkey,
                consolidate=True,
                replaced=tail,
            )


def object_hashes(objects: dict[str, bytes | None] | None) -> list:
    """(name, sha256 or None) of the named objects a change carries, for its fingerprint."""
    return sorted(
        (n, hashlib.sha256(d).hexdigest() if d is not None else None)
        for n, d in (objects or {}).items()
    )
