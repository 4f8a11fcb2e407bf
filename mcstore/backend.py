"""Object access for one tree root on any fsspec URL.

Everything the store reads or writes goes through :class:`Backend`, which gives

* ``write`` — an atomic whole-object write (local: temp file + fsync + rename; object
  stores: one PUT, which is atomic; memory: one assignment);
* ``put_if_absent`` — the commit primitive (local: temp file + fsync, then ``os.link``, which
  is atomic and fails if the name exists; S3: a conditional PUT ``If-None-Match: *``; memory:
  a lock-protected check); other fsspec filesystems get a check-then-write that is *not*
  race-safe (documented; a single writer is still crash-safe there);
* ranged and batched reads (S3 batches run concurrently through s3fs' event loop);
* counters of requests and bytes, so the benchmark and tests can see what really happens.

Errors of access (no credentials, permission denied, endpoint down) become
:class:`StoreAccessError`; a missing object stays ``FileNotFoundError`` for the caller to judge.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import fsspec

from .errors import InvalidArgument, StoreAccessError

_MEMORY_LOCK = threading.Lock()


@dataclass
class IOStats:
    gets: int = 0
    get_bytes: int = 0
    puts: int = 0
    put_bytes: int = 0
    heads: int = 0
    lists: int = 0
    deletes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {
                k: getattr(self, k)
                for k in ("gets", "get_bytes", "puts", "put_bytes", "heads", "lists", "deletes")
            }


def _access_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [PermissionError]
    try:
        import botocore.exceptions as be

        types += [
            be.NoCredentialsError,
            be.PartialCredentialsError,
            be.EndpointConnectionError,
            be.ConnectTimeoutError,
            be.ReadTimeoutError,
        ]
    except ImportError:  # pragma: no cover - s3fs is a dependency
        pass
    try:
        import aiohttp

        types.append(aiohttp.ClientConnectionError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


_ACCESS_ERRORS = _access_error_types()


def normalize_url(url: str) -> str:
    """A tree URL without a trailing slash; plain paths become absolute local paths."""
    url = str(url)
    if "://" not in url:
        url = os.path.abspath(os.path.expanduser(url))
    return url.rstrip("/") or "/"


class Backend:
    """Reads and writes objects below one root URL."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = normalize_url(url)
        self.storage_options = dict(storage_options or {})
        self.stats = IOStats()
        try:
            fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        except ImportError as e:
            raise StoreAccessError(
                f"{self.url}: no filesystem for this URL ({e}); install the fsspec backend for it"
            ) from e
        except _ACCESS_ERRORS as e:
            raise self._access(e) from e
        except ValueError as e:
            if "Protocol not known" in str(e):  # fsspec's words for an unknown scheme
                scheme = self.url.split("://", 1)[0] + "://"
                raise InvalidArgument(
                    f"{self.url}: unknown storage scheme {scheme!r}; use a local path, file://, "
                    "s3:// or memory://"
                ) from e
            raise InvalidArgument(f"{self.url}: bad storage options ({e})") from e
        self.fs = fs
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if protocol in ("file", "local"):
            self.kind = "local"
        elif protocol == "memory":
            self.kind = "memory"
        elif protocol in ("s3", "s3a"):
            self.kind = "s3"
        else:
            self.kind = "other"
        self.root = root.rstrip("/")
        # s3fs asks for the size (a HEAD) before a whole-object GET unless told not to split it
        self._one_get = {"max_concurrency": 1} if self.kind == "s3" else {}
        if self.kind == "memory" and not self.root.startswith("/"):
            self.root = "/" + self.root

    # ------------------------------------------------------------------ helpers
    def _access(self, e: BaseException) -> StoreAccessError:
        if type(e).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
            return StoreAccessError(
                f"{self.url}: no credentials for this storage ({type(e).__name__}: {e}); set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass the "
                "storage options key and secret"
            )
        return StoreAccessError(
            f"{self.url}: cannot reach the storage ({type(e).__name__}: {e}); check credentials, "
            "permissions and the endpoint (storage options / AWS settings)"
        )

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _guard(self, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except FileNotFoundError:
            raise
        except FileExistsError:
            raise
        except _ACCESS_ERRORS as e:
            raise self._access(e) from e
        except OSError as e:
            # s3fs maps AccessDenied to PermissionError, but some access problems arrive as
            # a bare OSError carrying the service's code.
            text = str(e)
            if any(s in text for s in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNot")):
                raise self._access(e) from e
            raise

    # ------------------------------------------------------------------ reads
    def read(self, rel: str) -> bytes:
        if self.kind == "local":
            with open(self.path(rel), "rb") as f:
                data = f.read()
        else:
            data = self._guard(self.fs.cat_file, self.path(rel), **self._one_get)
        self.stats.add(gets=1, get_bytes=len(data))
        return data

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        if self.kind == "local":
            with open(self.path(rel), "rb") as f:
                data = os.pread(f.fileno(), end - start, start)
        else:
            data = self._guard(self.fs.cat_file, self.path(rel), start=start, end=end)
        self.stats.add(gets=1, get_bytes=len(data))
        return data

    def read_ranges(self, reqs: list[tuple[str, int, int]]) -> list[bytes]:
        """Many ranged reads; concurrent on object stores. Missing objects raise."""
        if not reqs:
            return []
        if self.kind in ("local", "memory") or len(reqs) == 1:
            return [self.read_range(p, s, e) for p, s, e in reqs]
        out = self._guard(
            self.fs.cat_ranges,
            [self.path(p) for p, _, _ in reqs],
            [s for _, s, _ in reqs],
            [e for _, _, e in reqs],
            on_error="return",
        )
        for r in out:
            if isinstance(r, BaseException):
                if isinstance(r, FileNotFoundError):
                    raise r
                raise self._guard(_raise, r)
        self.stats.add(gets=len(out), get_bytes=sum(len(r) for r in out))
        return list(out)

    def read_many(self, rels: list[str]) -> dict[str, bytes | None]:
        """Whole objects, concurrently on object stores; a missing one maps to None."""
        if not rels:
            return {}
        if self.kind in ("local", "memory") or len(rels) == 1:
            out: dict[str, bytes | None] = {}
            for r in rels:
                try:
                    out[r] = self.read(r)
                except FileNotFoundError:
                    out[r] = None
            return out
        paths = [self.path(r) for r in rels]
        res = self._guard(self.fs.cat, paths, on_error="return", **self._one_get)
        out = {}
        n = 0
        for r, p in zip(rels, paths, strict=True):
            v = res.get(p)
            if isinstance(v, FileNotFoundError) or v is None:
                out[r] = None
            elif isinstance(v, BaseException):
                raise self._guard(_raise, v)
            else:
                out[r] = v
                n += len(v)
        self.stats.add(gets=len(rels), get_bytes=n)
        return out

    def exists(self, rel: str) -> bool:
        self.stats.add(heads=1)
        if self.kind == "local":
            return os.path.exists(self.path(rel))
        if self.kind == "s3":
            self.fs.invalidate_cache(self.path(rel))
        return bool(self._guard(self.fs.exists, self.path(rel)))

    def size(self, rel: str) -> int:
        self.stats.add(heads=1)
        if self.kind == "local":
            return os.path.getsize(self.path(rel))
        return int(self._guard(self.fs.size, self.path(rel)))

    def listdir(self, rel: str) -> list[str]:
        """Names (not paths) directly below ``rel``; empty if it does not exist."""
        self.stats.add(lists=1)
        if self.kind == "local":
            try:
                return sorted(os.listdir(self.path(rel)))
            except FileNotFoundError:
                return []
        p = self.path(rel)
        self.fs.invalidate_cache(p)
        try:
            entries = self._guard(self.fs.ls, p, detail=False)
        except FileNotFoundError:
            return []
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries} - {""})

    def walk(self, rel: str = "") -> list[tuple[str, int, float | None]]:
        """Every object below ``rel``: (relative path, size, mtime seconds or None)."""
        self.stats.add(lists=1)
        out: list[tuple[str, int, float | None]] = []
        base = self.path(rel)
        if self.kind == "local":
            for dirpath, _dirs, files in os.walk(base):
                for f in files:
                    full = os.path.join(dirpath, f)
                    try:
                        st = os.stat(full)
                    except FileNotFoundError:
                        continue
                    out.append((os.path.relpath(full, self.root), st.st_size, st.st_mtime))
            return sorted(out)
        self.fs.invalidate_cache(base)
        try:
            found = self._guard(self.fs.find, base, detail=True)
        except FileNotFoundError:
            return []
        for p, info in found.items():
            if info.get("type") == "directory":
                continue
            relp = p[len(self.root) :].lstrip("/") if p.startswith(self.root) else p
            out.append((relp, int(info.get("size") or 0), _mtime(info)))
        return sorted(out)

    # ------------------------------------------------------------------ writes
    def _local_tmp(self, final: str, data: bytes, durable: bool = True) -> str:
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
        """Atomic whole-object write (replaces any previous object); ``durable`` fsyncs."""
        data = bytes(data)
        if self.kind == "local":
            final = self.path(rel)
            tmp = self._local_tmp(final, data, durable)
            try:
                os.replace(tmp, final)
            except BaseException:
                _unlink(tmp)
                raise
        elif self.kind == "memory":
            with _MEMORY_LOCK:
                self.fs.pipe_file(self.path(rel), data)
        else:
            self._guard(self.fs.pipe_file, self.path(rel), data)
        self.stats.add(puts=1, put_bytes=len(data))

    def write_many(self, items: dict[str, bytes]) -> None:
        """Several atomic writes; concurrent on object stores."""
        if not items:
            return
        if self.kind != "s3" or len(items) == 1:
            for k, v in items.items():
                self.write(k, v)
            return
        self._guard(self.fs.pipe, {self.path(k): bytes(v) for k, v in items.items()})
        self.stats.add(puts=len(items), put_bytes=sum(len(v) for v in items.values()))

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        """Write ``data`` at ``rel`` only if nothing is there; False if something was."""
        data = bytes(data)
        self.stats.add(puts=1, put_bytes=len(data))
        if self.kind == "local":
            final = self.path(rel)
            tmp = self._local_tmp(final, data)
            try:
                os.link(tmp, final)
            except FileExistsError:
                return False
            finally:
                _unlink(tmp)
            _fsync_dir(os.path.dirname(final))
            return True
        if self.kind == "memory":
            with _MEMORY_LOCK:
                p = self.path(rel)
                if self.fs.exists(p):
                    return False
                self.fs.pipe_file(p, data)
                return True
        if self.kind == "s3":
            try:
                self._guard(self.fs.pipe_file, self.path(rel), data, mode="create")
            except FileExistsError:
                return False
            return True
        # Generic fsspec filesystem: no atomic primitive known; check then write.
        if self._guard(self.fs.exists, self.path(rel)):
            return False
        self._guard(self.fs.pipe_file, self.path(rel), data)
        return True

    def delete(self, rels: Iterable[str]) -> int:
        rels = list(rels)
        if not rels:
            return 0
        if self.kind == "local":
            for r in rels:
                _unlink(self.path(r))
        else:
            self._guard(self.fs.rm, [self.path(r) for r in rels])
        self.stats.add(deletes=len(rels))
        return len(rels)

    def ensure_root(self) -> None:
        if self.kind == "local":
            os.makedirs(self.root, exist_ok=True)
        elif self.kind == "s3":
            bucket = self.root.split("/", 1)[0]
            if not self._guard(self.fs.exists, bucket):
                raise StoreAccessError(
                    f"{self.url}: bucket {bucket!r} does not exist or is not accessible; create "
                    "it first or check the endpoint and credentials"
                )


def _raise(e: BaseException):
    raise e


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


def _mtime(info: dict) -> float | None:
    for k in ("LastModified", "mtime", "created", "last_modified"):
        v = info.get(k)
        if v is None:
            continue
        if hasattr(v, "timestamp"):
            return float(v.timestamp())
        try:
            return float(v)
        except (TypeError, ValueError):
            continue
    return None
