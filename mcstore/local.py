"""A tree on local disk: plain file I/O, with the atomicity and the refusals a tree needs.

``write`` goes to a temp file that is fsynced and renamed over the name; ``put_if_absent``
hard-links the temp file to the name, which fails if the name exists (atomic on POSIX). Reads
open regular files only (never a device, a FIFO or a link, which could hang or never end), and
a folder that resolves outside the tree (a symlinked ``tail/``) is refused before any write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import uuid
from collections.abc import Iterable

from .backend import Backend, too_large
from .errors import CorruptTree


class LocalBackend(Backend):
    """A local folder: plain file I/O. Writes go to a temp file, are fsynced and renamed
    (``write``) or hard-linked, which fails if the name exists (``put_if_absent``)."""

    atomic_create = True

    def __init__(self, url: str, storage_options: dict | None = None, *, fs=None, root=None):
        super().__init__(url, storage_options, fs=fs, root=root)
        self._safe_dirs: set[str] = set()

    def _inside(self, full: str, rel: str) -> None:
        """CorruptTree if the folder holding ``full`` resolves outside the tree (a symlinked
        store folder would let a tree redirect writes anywhere)."""
        d = os.path.dirname(full)
        if d in self._safe_dirs:
            return
        root = os.path.realpath(self.root)
        real = os.path.realpath(d)
        if real != root and not real.startswith(root + os.sep):
            raise CorruptTree(
                f"{self.url}: the folder of object {rel} resolves to {real}, outside the tree "
                "(a symbolic link?); trees must not link elsewhere: replace the link by the "
                "folder it points to"
            )
        self._safe_dirs.add(d)

    def _open(self, rel: str) -> int:
        """A file descriptor of a regular file inside the tree (never a device, a FIFO or a
        link: opening one must neither hang nor read without end)."""
        full = self.path(rel)
        self._inside(full, rel)
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EMLINK):
                raise CorruptTree(
                    f"{self.url}: object {rel} is a symbolic link; a tree holds regular files "
                    "only: replace it by the file (or restore the tree from a copy)"
                ) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            if stat.S_ISDIR(os.lstat(full).st_mode):
                raise IsADirectoryError(full)
            raise CorruptTree(
                f"{self.url}: object {rel} is not a regular file (a device or a pipe?); a tree "
                "holds regular files only: restore it from a copy"
            )
        return fd

    def read(self, rel: str, *, limit: int | None = None) -> bytes:
        fd = self._open(rel)
        try:
            size = os.fstat(fd).st_size
            if limit is not None and size > limit:
                raise too_large(self.url, rel, limit)
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read()
        finally:
            os.close(fd)
        self.stats.add(gets=1, get_bytes=len(data))
        return data

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        fd = self._open(rel)
        try:
            data = os.pread(fd, end - start, start)
        finally:
            os.close(fd)
        self.stats.add(gets=1, get_bytes=len(data))
        return data

    def exists(self, rel: str) -> bool:
        self.stats.add(heads=1)
        return os.path.exists(self.path(rel))

    def listdir(self, rel: str) -> list[str]:
        self.stats.add(lists=1)
        try:
            return sorted(os.listdir(self.path(rel)))
        except FileNotFoundError:
            return []

    def walk(self, rel: str = "") -> list[tuple[str, int, float | None]]:
        self.stats.add(lists=1)
        out: list[tuple[str, int, float | None]] = []
        for dirpath, _dirs, files in os.walk(self.path(rel)):
            for f in files:
                full = os.path.join(dirpath, f)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                out.append((os.path.relpath(full, self.root), st.st_size, st.st_mtime))
        return sorted(out)

    def _tmp(self, final: str, data: bytes, durable: bool = True) -> str:
        d = os.path.dirname(final)
        os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, f".tmp-{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def write(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        data = bytes(data)
        final = self.path(rel)
        self._inside(final, rel)
        tmp = self._tmp(final, data, durable)
        try:
            os.replace(tmp, final)
        except BaseException:
            _unlink(tmp)
            raise
        self.stats.add(puts=1, put_bytes=len(data))

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        data = bytes(data)
        self.stats.add(puts=1, put_bytes=len(data))
        final = self.path(rel)
        self._inside(final, rel)
        tmp = self._tmp(final, data)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            _unlink(tmp)
        _fsync_dir(os.path.dirname(final))
        return True

    def restamp(self, rel: str, data: bytes | None = None) -> bool:
        """The file's modification time set to now (its bytes untouched); False if absent."""
        self.stats.add(puts=1)
        full = self.path(rel)
        self._inside(full, rel)
        try:
            os.utime(full, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def mtime(self, rel: str) -> float | None:
        self.stats.add(heads=1)
        full = self.path(rel)
        self._inside(full, rel)
        st = os.stat(full, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(rel)
        return st.st_mtime

    def delete(self, rels: Iterable[str]) -> int:
        rels = list(rels)
        for r in rels:
            full = self.path(r)
            self._inside(full, r)
            _unlink(full)
        self.stats.add(deletes=len(rels))
        return len(rels)

    def ensure_root(self) -> None:
        os.makedirs(self.root, exist_ok=True)

    def remove_all(self) -> None:
        shutil.rmtree(self.root)
        self.stats.add(deletes=1)


def _unlink(p: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(p)


def _fsync_dir(d: str) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
