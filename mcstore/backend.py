"""Object access for one tree root on any fsspec URL.

Everything the store reads or writes goes through a :class:`Backend`.

One class per kind of storage, chosen by :func:`open_backend`: the generic fsspec ``Backend``
and ``MemoryBackend`` here, ``LocalBackend`` in ``local``, ``S3Backend`` in ``s3``; each gives

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

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import fsspec

from .errors import CorruptTree, InvalidArgument, StoreAccessError


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


def _service_error_types() -> tuple[type[BaseException], ...]:
    try:
        import botocore.exceptions as be

        return (be.ClientError, be.BotoCoreError)
    except ImportError:  # pragma: no cover - s3fs is a dependency
        return ()


_SERVICE_ERRORS = _service_error_types()
RESUME = "nothing past the tree's last commit changed: run the command again to continue"


def normalize_url(url: str) -> str:
    """A tree URL without a trailing slash; plain paths become absolute local paths."""
    url = str(url)
    if "://" not in url:
        url = os.path.abspath(os.path.expanduser(url))
    return url.rstrip("/") or "/"


class Backend:
    """Reads and writes objects below one root URL on any fsspec filesystem.

    This base class is the generic fsspec implementation; :func:`open_backend` picks the
    subclass for the URL's scheme. What differs between storages is said by capability flags
    (zarr's ``Store.supports_*`` pattern), never by a scheme test above this module:

    * ``atomic_create`` — ``put_if_absent`` is race-safe (two writers cannot both win);
    * ``concurrent_io`` — batched reads and writes are worth issuing concurrently.
    """

    atomic_create = False
    concurrent_io = False

    def __init__(self, url: str, storage_options: dict | None = None, *, fs=None, root=None):
        self.url = normalize_url(url)
        self.storage_options = dict(storage_options or {})
        self.stats = IOStats()
        if fs is None:
            fs, root = filesystem(self.url, self.storage_options)
        self.fs = fs
        self.root = root.rstrip("/")

    # ------------------------------------------------------------------ helpers
    def access_error(self, e: BaseException) -> StoreAccessError:
        return access_error(self.url, e)

    def path(self, rel: str) -> str:
        if rel:
            check_key(self.url, rel)
        return f"{self.root}/{rel}" if rel else self.root

    def _guard(self, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except FileNotFoundError:
            raise
        except FileExistsError:
            raise
        except _ACCESS_ERRORS as e:
            raise self.access_error(e) from e
        except _SERVICE_ERRORS as e:
            raise StoreAccessError(
                f"{self.url}: the storage service failed ({type(e).__name__}: {e}); {RESUME}"
            ) from e
        except OSError as e:
            # s3fs maps AccessDenied to PermissionError, but some access problems arrive as
            # a bare OSError carrying the service's code.
            text = str(e)
            if any(s in text for s in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNot")):
                raise self.access_error(e) from e
            raise

    # ------------------------------------------------------------------ reads
    def _cat(self, path: str) -> bytes:
        return self._guard(self.fs.cat_file, path)

    def read(self, rel: str, *, limit: int | None = None) -> bytes:
        """A whole object; ``limit``: at most this many bytes are read, and an object larger
        than that is damage (a small JSON object the tree names cannot be gigabytes)."""
        if limit is None:
            data = self._cat(self.path(rel))
        else:
            data = self._guard(self.fs.cat_file, self.path(rel), start=0, end=limit + 1)
        self.stats.add(gets=1, get_bytes=len(data))
        if limit is not None and len(data) > limit:
            raise too_large(self.url, rel, limit)
        return data

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        data = self._guard(self.fs.cat_file, self.path(rel), start=start, end=end)
        self.stats.add(gets=1, get_bytes=len(data))
        return data

    def read_ranges(self, reqs: list[tuple[str, int, int]]) -> list[bytes]:
        """Many ranged reads; concurrent where ``concurrent_io``. Missing objects raise."""
        if not self.concurrent_io or len(reqs) <= 1:
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
        """Whole objects, concurrent where ``concurrent_io``; a missing one maps to None."""
        if not self.concurrent_io or len(rels) <= 1:
            out: dict[str, bytes | None] = {}
            for r in rels:
                try:
                    out[r] = self.read(r)
                except FileNotFoundError:
                    out[r] = None
            return out
        paths = [self.path(r) for r in rels]
        res = self._guard(self.fs.cat, paths, on_error="return", **self._whole_get())
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

    def _whole_get(self) -> dict:
        return {}

    def exists(self, rel: str) -> bool:
        self.stats.add(heads=1)
        return bool(self._guard(self.fs.exists, self.path(rel)))

    def list_after(self, rel: str, after: str) -> list[str]:
        """Names directly below ``rel`` that sort after ``after`` (one request where the
        storage can start a listing there)."""
        return [n for n in self.listdir(rel) if n > after]

    def listdir(self, rel: str) -> list[str]:
        """Names (not paths) directly below ``rel``; empty if it does not exist."""
        self.stats.add(lists=1)
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
    def write(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        """Atomic whole-object write (replaces any previous object); ``durable`` fsyncs where
        the storage has such a thing."""
        data = bytes(data)
        self._guard(self.fs.pipe_file, self.path(rel), data)
        self.stats.add(puts=1, put_bytes=len(data))

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        """Write ``data`` at ``rel`` only if nothing is there; False if something was.

        Here (a filesystem with no known atomic primitive) a check then a write: crash-safe
        for one writer, not race-safe (``atomic_create`` is False)."""
        data = bytes(data)
        self.stats.add(puts=1, put_bytes=len(data))
        if self._guard(self.fs.exists, self.path(rel)):
            return False
        self._guard(self.fs.pipe_file, self.path(rel), data)
        return True

    def restamp(self, rel: str, data: bytes | None = None) -> bool:
        """Make an existing object's modification time now, keeping its bytes; False if
        nothing is there. ``data``: its bytes, when the caller holds them (saves a read where
        the storage can only rewrite an object).

        gc judges an unreferenced object by that time. A writer that adopts an object written
        earlier (put-if-absent found the same bytes there: a crashed writer's shard, a
        content-addressed blob) re-stamps it, so its grace counts from the adoption and not
        from the crash (docs/architecture.md#garbage-collection). Here: the same bytes
        written again."""
        try:
            if data is None:
                data = self.read(rel)
            elif not self.exists(rel):
                return False
        except FileNotFoundError:
            return False
        self.write(rel, data)
        return True

    def mtime(self, rel: str) -> float | None:
        """An object's modification time in seconds (None where the storage keeps none);
        FileNotFoundError if it does not exist. gc asks again right before deleting."""
        self.stats.add(heads=1)
        p = self.path(rel)
        self.fs.invalidate_cache(p)
        info = self._guard(self.fs.info, p)
        if info.get("type") == "directory":
            raise FileNotFoundError(rel)
        return _mtime(info)

    def delete(self, rels: Iterable[str]) -> int:
        rels = list(rels)
        if not rels:
            return 0
        self._guard(self.fs.rm, [self.path(r) for r in rels])
        self.stats.add(deletes=len(rels))
        return len(rels)

    def remove_all(self) -> None:
        """Delete the root and everything below it."""
        self._guard(self.fs.rm, self.root, recursive=True)
        self.stats.add(deletes=1)

    def ensure_root(self) -> None:
        """Make sure objects can be created below the root (or say why not)."""


class MemoryBackend(Backend):
    """fsspec's in-memory filesystem (tests, scratch trees). That filesystem is one store per
    process, so the lock that makes ``put_if_absent`` atomic is one per process too."""

    atomic_create = True
    _lock = threading.Lock()

    def __init__(self, url: str, storage_options: dict | None = None, *, fs=None, root=None):
        super().__init__(url, storage_options, fs=fs, root=root)
        if not self.root.startswith("/"):
            self.root = "/" + self.root

    def write(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        with self._lock:
            super().write(rel, data, durable=durable)

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        data = bytes(data)
        self.stats.add(puts=1, put_bytes=len(data))
        with self._lock:
            p = self.path(rel)
            if self.fs.exists(p):
                return False
            self.fs.pipe_file(p, data)
            return True


IO_THREADS = 8  # requests a batched read or write keeps in flight on an object store


def concurrently(be: Backend, fn: Callable, *args: list) -> list:
    """``fn`` over the argument lists, in order: concurrently where the backend says
    ``concurrent_io`` (an object store), one by one else."""
    n = len(args[0])
    if be.concurrent_io and n > 1:
        with ThreadPoolExecutor(min(IO_THREADS, n)) as ex:
            return list(ex.map(fn, *args))
    return [fn(*a) for a in zip(*args, strict=True)]


# Storage options the store reads itself; never passed to the fsspec filesystem.
BACKEND_OPTIONS = frozenset({"unsafe_single_writer", "allow_bases"})


def check_key(url: str, rel: str) -> None:
    """An object key must name something below the root: relative, '/'-separated, no empty,
    '.' or '..' parts. A key that is not comes from a crafted or damaged tree."""
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise CorruptTree(f"{url}: object key {rel!r} would leave the tree; the tree is damaged")


def too_large(url: str, rel: str, limit: int) -> CorruptTree:
    return CorruptTree(
        f"{url}: object {rel} is larger than {limit} bytes, more than such an object can hold; "
        "the tree is damaged there: restore that object from a copy"
    )


def access_error(url: str, e: BaseException) -> StoreAccessError:
    if type(e).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        return StoreAccessError(
            f"{url}: no credentials for this storage ({type(e).__name__}: {e}); set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass the "
            "storage options key and secret"
        )
    return StoreAccessError(
        f"{url}: cannot reach the storage ({type(e).__name__}: {e}); check credentials, "
        f"permissions and the endpoint (storage options / AWS settings); {RESUME}"
    )


def filesystem(url: str, storage_options: dict):
    """(fsspec filesystem, root path) for a normalized URL; errors in the store's terms."""
    try:
        opts = {k: v for k, v in storage_options.items() if k not in BACKEND_OPTIONS}
        return fsspec.core.url_to_fs(url, **opts)
    except ImportError as e:
        raise StoreAccessError(
            f"{url}: no filesystem for this URL ({e}); install the fsspec backend for it"
        ) from e
    except _ACCESS_ERRORS as e:
        raise access_error(url, e) from e
    except ValueError as e:
        if "Protocol not known" in str(e):  # fsspec's words for an unknown scheme
            scheme = url.split("://", 1)[0] + "://"
            raise InvalidArgument(
                f"{url}: unknown storage scheme {scheme!r}; use a local path, file://, "
                "s3:// or memory://"
            ) from e
        raise InvalidArgument(f"{url}: bad storage options ({e})") from e


def open_backend(url: str, storage_options: dict | None = None) -> Backend:
    """The backend class for the URL's filesystem, opened at ``url``."""
    url = normalize_url(url)
    opts = dict(storage_options or {})
    fs, root = filesystem(url, opts)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return backend_class(protocol)(url, opts, fs=fs, root=root)


def backend_class(protocol: str) -> type[Backend]:
    """The class for an fsspec protocol (the generic ``Backend`` for any other)."""
    from .local import LocalBackend  # they subclass Backend: imported when first needed
    from .s3 import S3Backend

    return {
        "file": LocalBackend,
        "local": LocalBackend,
        "memory": MemoryBackend,
        "s3": S3Backend,
        "s3a": S3Backend,
    }.get(protocol, Backend)


def _raise(e: BaseException):
    raise e


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
