"""What every benchmark records or needs alike: the machine it ran on and a local S3 (moto).

Kept free of torch and the runtime at import time, so the store benchmark, which needs neither,
does not pay for loading them.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# -- the machine ---------------------------------------------------------------------------------


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def machine_info() -> dict:
    """CPU, cores (all and usable), memory, torch and its threads, GPU, commit, load average:
    enough to tell whether two result files can be compared."""
    import torch

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    commit, dirty = "unknown", None
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": mem,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
        "loadavg_start": loadavg(),
    }


# -- S3 on this machine (moto) -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


@contextlib.contextmanager
def moto_s3(*, own_process: bool, bucket: str = "bench") -> Iterator[dict]:
    """A moto S3 server on 127.0.0.1 with ``bucket`` created; yields fsspec storage options.

    ``own_process``: run the server as a separate process, so, like a remote store, it does not
    share this interpreter (and its GIL) with what is being measured; otherwise a thread here
    (starts faster; what the store benchmark has always used)."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    port = _free_port()
    so = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "key": "bench",
        "secret": "bench",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    if own_process:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stop = proc.terminate
    else:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        proc, stop = None, server.stop
    try:
        import s3fs

        deadline = time.time() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline or (proc is not None and proc.poll() is not None):
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.2)
        s3fs.S3FileSystem(**so).call_s3("create_bucket", Bucket=bucket)
        yield so
    finally:
        stop()
        if proc is not None:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
