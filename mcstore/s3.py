"""A tree in an S3 bucket through s3fs: conditional PUTs for the commit primitive, probed
once per endpoint, and concurrent batched requests."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid

from .backend import Backend
from .errors import StoreAccessError


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

    def restamp(self, rel: str, data: bytes | None = None) -> bool:
        """A copy of the object onto itself with new metadata: the server sets its
        LastModified to now without the bytes travelling; False if it does not exist."""
        self.stats.add(puts=1)
        path = self.path(rel)
        bucket, _, key = path.partition("/")
        try:
            self._guard(
                self.fs.call_s3,
                "copy_object",
                Bucket=bucket,
                Key=key,
                CopySource={"Bucket": bucket, "Key": key},
                MetadataDirective="REPLACE",  # S3 refuses a copy onto itself that changes nothing
                Metadata={"mc-restamped": str(time.time_ns())},
            )
        except FileNotFoundError:
            return False
        finally:
            self.fs.invalidate_cache(path)
        return True

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        if not self.conditional_writes():  # the user said: one writer only
            self.fs.invalidate_cache(self.path(rel))
            return super().put_if_absent(rel, data)
        data = bytes(data)
        self.stats.add(puts=1, put_bytes=len(data))
        return self._create(self.path(rel), data)

    def _create(self, path: str, data: bytes) -> bool:
        """A PUT with ``If-None-Match: *``; False if the server says the name is taken.

        AWS answers 409 ``ConditionalRequestConflict`` while another conditional write to
        the same name is in flight; neither s3fs nor botocore retries it, so this does, a few
        times with backoff: the retry then wins or finds the name taken (412)."""
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self._guard(self.fs.pipe_file, path, data, mode="create")
            except FileExistsError:
                return False
            except (OSError, StoreAccessError) as e:
                # s3fs maps a 412 to FileExistsError only when the reply names the failed
                # condition (AWS and moto do; SeaweedFS does not). If-None-Match is the only
                # precondition this PUT carries, so any 412 means the name is taken.
                if _precondition_failed(e):
                    return False
                if _in_flight_conflict(e) and attempt < CONFLICT_RETRIES:
                    time.sleep(0.05 * 2**attempt)
                    continue
                raise
            return True
        raise AssertionError("unreachable")

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


CONFLICT_RETRIES = 5  # 409s from a racing conditional write: 50 ms .. 1.6 s of backoff


def _in_flight_conflict(e: BaseException) -> bool:
    """Whether an error is S3's 409 ConditionalRequestConflict (a racing conditional write)."""
    for x in (e, e.__cause__):
        resp = getattr(x, "response", None) or {}
        if (resp.get("Error") or {}).get("Code") == "ConditionalRequestConflict":
            return True
        if (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode") == 409:
            return True
    return False


def _precondition_failed(e: BaseException) -> bool:
    """Whether an s3fs error is the service's 412 Precondition Failed."""
    resp = getattr(e.__cause__, "response", None) or {}
    status = (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return status == 412 or (resp.get("Error") or {}).get("Code") == "PreconditionFailed"
