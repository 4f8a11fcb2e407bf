"""Assertions shared by the server tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import httpx

from tests.cli.helpers import mc_cmd, mc_env

ERROR_KEYS = {"message", "type", "param", "code"}


def error_of(r: httpx.Response, status: int) -> dict:
    """The response is a JSON error in OpenAI's shape with this status, and no traceback."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body["error"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_process(root, port: int, *args) -> subprocess.Popen:
    """`mc serve ROOT` on 127.0.0.1:PORT over the tiny model, as a real process."""
    return subprocess.Popen(
        mc_cmd("serve", root, "--port", port, "--model", "tiny", "--window", 512, *args),
        env=mc_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_healthy(url: str, p: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert p.poll() is None, p.communicate()[1]
        assert time.monotonic() < deadline, "mc serve did not start"
        time.sleep(0.2)


def stop(p: subprocess.Popen) -> str:
    """Ctrl-C, then a kill if it lingers (never leave a server behind); -> its stderr."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        return p.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        p.kill()
        return p.communicate()[1]
