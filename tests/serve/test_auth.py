"""Who may talk to the server: the bearer key, the loopback rule, where keys come from."""

from __future__ import annotations

import httpx
import openai
import pytest

from mcruntime.serve import (
    KEY_ENV,
    Memories,
    ServeConfig,
    ServeError,
    check_bind,
    create_app,
    is_loopback,
    load_api_key,
)
from tests.cli.helpers import one_error_line, run_mc
from tests.serve.conftest import MODEL

KEY = "k3y-" + "x" * 28


def test_key_is_required_on_every_api_route_but_health(start):
    live = start(api_key=KEY)
    msgs = [{"role": "user", "content": "hi"}]
    for key in ("wrong-key-wrong-key-wrong", KEY[:-1], KEY + "x", ""):
        with pytest.raises(openai.AuthenticationError) as e:
            live.client(api_key=key or "-").chat.completions.create(
                model=MODEL, messages=msgs, max_tokens=2
            )
        assert e.value.code == "invalid_api_key"
    for method, path in (
        ("GET", "/v1/models"),
        ("GET", "/v1/memories/default"),
        ("POST", "/v1/memories/default/documents"),
        ("POST", "/v1/chat/completions"),
    ):
        # refused before the body is read: even bad JSON gets 401, not 400
        r = httpx.request(method, f"{live.url}{path}", content=b"{bad")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
        r = httpx.request(method, f"{live.url}{path}", headers={"Authorization": f"Basic {KEY}"})
        assert r.status_code == 401
    assert httpx.get(f"{live.url}/healthz").status_code == 200
    r = live.client(api_key=KEY).chat.completions.create(model=MODEL, messages=msgs, max_tokens=2)
    assert r.choices[0].message.content is not None
    assert [m.id for m in live.client(api_key=KEY).models.list()] == [MODEL]


def test_non_loopback_needs_a_key(tmp_path, tiny):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.8.9.10") and is_loopback("[::1]")
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com", "10.0.0.1"):
        assert not is_loopback(host)
        with pytest.raises(ServeError, match="API key is required"):
            check_bind(host, None)
        cfg = ServeConfig(root=str(tmp_path), host=host, model="tiny")
        with pytest.raises(ServeError, match="API key is required"):
            create_app(cfg, Memories(cfg, base=tiny))
        check_bind(host, KEY)  # with a key it may listen anywhere


def test_cli_refuses_to_expose_without_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    r = run_mc(["serve", tmp_path, "--host", "0.0.0.0", "--model", "tiny"])
    assert r.code == ServeError.exit_code
    one_error_line(r.err, "API key is required", "--api-key-file")
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    r = run_mc(["serve", tmp_path, "--host", "0.0.0.0", "--api-key-file", short])
    assert r.code == ServeError.exit_code
    one_error_line(r.err, "at least 16 characters")
    r = run_mc(["serve", tmp_path, "--api-key-file", tmp_path / "missing.key"])
    assert r.code == ServeError.exit_code
    one_error_line(r.err, "cannot read the API key file")


def test_keys_come_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert load_api_key(None) is None
    monkeypatch.setenv(KEY_ENV, f"  {KEY}\n")
    assert load_api_key(None) == KEY
    monkeypatch.setenv("OTHER_KEY", KEY + "2")
    assert load_api_key(None, "OTHER_KEY") == KEY + "2"
    f = tmp_path / "api.key"
    f.write_text(f"{KEY}9\n# a comment line is ignored\n")
    assert load_api_key(str(f)) == KEY + "9"  # the file wins over the environment
    f.write_text("\n\n")
    with pytest.raises(ServeError, match="empty"):
        load_api_key(str(f))
    f.write_text("two words that are long enough\n")
    with pytest.raises(ServeError, match="without spaces"):
        load_api_key(str(f))
