"""Object access for one tree root on any fsspec URL.

Everything the store reads or writes goes through :class:`Backend`, which gives

One class per kind of storage (``LocalBackend``, ``MemoryBackend``, ``S3Backend``, and the
generic fsspec ``Backend``), chosen by :func:`open_backend`; each gives

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
import errno
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Iterable
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


class S3Backend(Backend):
    """An S3 bucket prefix through s3fs. ``put_if_absent`` is a conditional PUT
    (``If-None-Match: *``), checked once against the server (``conditional_writes``: a server
    that ignores the header is refused, never written to unsafely); batched requests run
    concurrently on s3fs' event loop. Storage option ``unsafe_single_writer=True`` (read here,
    not passed to s3fs) allows writing through a server without conditional writes."""

    atomic_create = True
    concurrent_io = True

    def _whole_get(self) -> dict:
        # s3fs asks for the size (a HEAD) before a whole-object GET unless told not to split it
        return {"max_concurrency": 1}

    def _cat(self, path: str) -> bytes:
        return self._guard(self.fs.cat_file, path, **self._whole_get())

    def exists(self, rel: str) -> bool:
        self.fs.invalidate_cache(self.path(rel))
        return super().exists(rel)

    def list_after(self, rel: str, after: str) -> list[str]:
        self.stats.add(lists=1)
        bucket, _, key = self.path(rel).partition("/")
        prefix = key.rstrip("/") + "/"
        res = self._guard(
            self.fs.call_s3,
            "list_objects_v2",
            Bucket=bucket,
            Prefix=prefix,
            StartAfter=prefix + after,
            MaxKeys=1000,
        )
        names = {c["Key"][len(prefix) :].split("/", 1)[0] for c in res.get("Contents", [])}
        return sorted(n for n in names if n > after)

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        if not self.conditional_writes():  # the user said: one writer only
            self.fs.invalidate_cache(self.path(rel))
            return super().put_if_absent(rel, data)
        data = bytes(data)
        self.stats.add(puts=1, put_bytes=len(data))
        return self._create(self.path(rel), data)

    def _create(self, path: str, data: bytes) -> bool:
        """One PUT with ``If-None-Match: *``; False if the server says the name is taken."""
        try:
            self._guard(self.fs.pipe_file, path, data, mode="create")
        except FileExistsError:
            return False
        except OSError as e:
            # s3fs maps a 412 to FileExistsError only when the reply names the failed
            # condition (AWS and moto do; SeaweedFS does not). If-None-Match is the only
            # precondition this PUT carries, so any 412 means the name is taken.
            if _precondition_failed(e):
                return False
            raise
        return True

    def conditional_writes(self) -> bool:
        """True if ``put_if_absent`` may rely on the server's conditional PUT.

        A server that ignores ``If-None-Match`` would let two writers both "win" version n
        and one commit would be lost without a word, so before the first put-if-absent the
        server is asked (:func:`_conditional_writes_honoured`, once per endpoint and bucket
        per process). If it ignores the header: StoreAccessError, unless the storage option
        ``unsafe_single_writer=True`` says only one writer ever writes this tree; then False
        (put-if-absent becomes a check then a write: crash-safe, not race-safe, and
        ``atomic_create`` says so)."""
        if _conditional_writes_honoured(self):
            return True
        if self.storage_options.get("unsafe_single_writer") is True:
            self.atomic_create = False
            return False
        raise StoreAccessError(
            f"{self.url}: the S3 server at {s3_endpoint(self.storage_options)} does not honour "
            "conditional writes (a PUT with If-None-Match: * replaced an existing object), so "
            "two writers could both commit one version and a commit would be lost; refusing "
            "to write. Use a server that supports conditional writes, or, if only one writer "
            "ever writes this tree, pass the storage option unsafe_single_writer=True"
        )

    def probe_conditional_writes(self) -> bool:
        """Ask the server: create a probe object below the root twice with ``If-None-Match:
        *``; the second must be refused. The probe is deleted again."""
        token = uuid.uuid4().hex
        path = self.path(f".mc-probe-{token}")
        self.stats.add(puts=2, put_bytes=2 * len(token), deletes=1)
        try:
            # "taken" on a fresh name is our own PUT, retried after a lost response
            if not self._create(path, token.encode()) and self._cat(path) != token.encode():
                raise StoreAccessError(
                    f"{self.url}: a new probe object {path} held other bytes; the S3 "
                    "server's conditional writes cannot be trusted"
                )
            return not self._create(path, b"second")
        finally:
            with contextlib.suppress(Exception):
                self._guard(self.fs.rm, path)

    def ensure_root(self) -> None:
        bucket = self.root.split("/", 1)[0]
        if not self._guard(self.fs.exists, bucket):
            raise StoreAccessError(
                f"{self.url}: bucket {bucket!r} does not exist or is not accessible; create "
                "it first or check the endpoint and credentials"
            )


# Storage options the store reads itself; never passed to the fsspec filesystem.
BACKEND_OPTIONS = frozenset({"unsafe_single_writer"})

# (endpoint, bucket) -> whether the server honours If-None-Match: * (probed once per process)
_CONDITIONAL_WRITES: dict[tuple[str, str], bool] = {}
_CONDITIONAL_WRITES_LOCK = threading.Lock()


def s3_endpoint(storage_options: dict) -> str:
    """The S3 endpoint a backend's storage options (or the AWS environment) point at."""
    so = storage_options or {}
    return (
        so.get("endpoint_url")
        or (so.get("client_kwargs") or {}).get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or "the default AWS S3 endpoint"
    )


def _conditional_writes_honoured(be: S3Backend) -> bool:
    key = (s3_endpoint(be.storage_options), be.root.split("/", 1)[0])
    with _CONDITIONAL_WRITES_LOCK:
        if key not in _CONDITIONAL_WRITES:
            _CONDITIONAL_WRITES[key] = be.probe_conditional_writes()
        return _CONDITIONAL_WRITES[key]


def _precondition_failed(e: BaseException) -> bool:
    """Whether an s3fs error is the service's 412 Precondition Failed."""
    resp = getattr(e.__cause__, "response", None) or {}
    status = (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return status == 412 or (resp.get("Error") or {}).get("Code") == "PreconditionFailed"


_BY_PROTOCOL: dict[str, type[Backend]] = {
    "file": LocalBackend,
    "local": LocalBackend,
    "memory": MemoryBackend,
    "s3": S3Backend,
    "s3a": S3Backend,
}


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
    cls = _BY_PROTOCOL.get(protocol, Backend)
    return cls(url, opts, fs=fs, root=root)


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
