"""Memories on S3 (the moto server), and `mc serve` as a real process."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid

import httpx
import openai
import pytest

import mcstore
from tests.cli.helpers import mc_cmd, mc_env, one_error_line, run_mc
from tests.serve.conftest import MODEL, chat_turns
from tests.store.conftest import BUCKET


@pytest.mark.s3
def test_memories_on_s3(start, moto_server):
    so = moto_server["storage_options"]
    root = f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}/memories"
    live = start(root=root, storage_options=so)
    c = live.client()
    r = httpx.post(
        f"{live.url}/v1/memories/ana/documents",
        json={"text": "Spare keys are in the red box.", "source": "keys.txt"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    a = (
        c.chat.completions.create(
            model=MODEL,
            user="ana",
            max_tokens=4,
            messages=[{"role": "user", "content": "Where are the keys?"}],
        )
        .choices[0]
        .message.content
    )
    streamed = "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(
            model=MODEL,
            user="ana",
            max_tokens=4,
            stream=True,
            messages=[
                {"role": "user", "content": "Where are the keys?"},
                {"role": "assistant", "content": a},
                {"role": "user", "content": "Sure?"},
            ],
        )
        if ch.choices
    )
    t = mcstore.open(f"{root}/ana.mc", storage_options=so)
    assert [s.source for s in t.segments()] == [
        "keys.txt",
        "chat:user",
        "chat:assistant",
        "chat:user",
        "chat:assistant",
    ]
    assert chat_turns(t) == [
        ("user", "Where are the keys?"),
        ("assistant", a.strip()),
        ("user", "Sure?"),
        ("assistant", streamed.strip()),
    ]
    info = httpx.get(f"{live.url}/v1/memories/ana").json()
    assert info["length"] == t.length and info["version"] == t.version
    assert BUCKET not in str(info)
    mcstore.verify(t.url, storage_options=so)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mc_serve_as_a_process(tmp_path):
    """Starts, answers the openai client, and stops cleanly on Ctrl-C (SIGINT)."""
    port = _free_port()
    key = tmp_path / "api.key"
    key.write_text("a-long-enough-test-key-123456\n")
    root = tmp_path / "mem"
    p = subprocess.Popen(
        mc_cmd(
            "serve", root, "--port", port, "--model", "tiny", "--window", 512, "--api-key-file", key
        ),
        env=mc_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert p.poll() is None, p.communicate()[1]
            assert time.monotonic() < deadline, "mc serve did not start"
            time.sleep(0.2)
        c = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key="a-long-enough-test-key-123456",
            max_retries=0,
            timeout=60,
        )
        r = c.chat.completions.create(
            model="tiny", user="proc", max_tokens=3, messages=[{"role": "user", "content": "hello"}]
        )
        assert r.model == MODEL
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="nope", max_retries=0
            ).models.list()
    finally:
        p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # never leave a server behind
            p.kill()
            _, err = p.communicate()
    assert p.returncode == 0, err
    assert f"at http://127.0.0.1:{port}/v1 with {MODEL} (answers: keeper); API key required" in err
    assert "Traceback" not in err
    assert chat_turns(mcstore.open(str(root / "proc.mc")))[0] == ("user", "hello")


def test_serve_help_and_bad_options(tmp_path):
    r = run_mc(["serve", "--help"])
    assert r.code == 0 and "X-Memory" in r.out and "--api-key-file" in r.out
    r = run_mc(["serve", tmp_path, "--port", "70000"])
    assert r.code == 2 and "70000" in r.err


def test_a_taken_port_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = run_mc(["serve", tmp_path / "mem", "--port", port, "--model", "tiny"])
    assert r.code == 2
    one_error_line(r.err, f"cannot listen on 127.0.0.1:{port}")
