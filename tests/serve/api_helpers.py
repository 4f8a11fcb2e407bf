"""Assertions shared by the server tests."""

from __future__ import annotations

import httpx

ERROR_KEYS = {"message", "type", "param", "code"}


def error_of(r: httpx.Response, status: int) -> dict:
    """The response is a JSON error in OpenAI's shape with this status, and no traceback."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body["error"]
