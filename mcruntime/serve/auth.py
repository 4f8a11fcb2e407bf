"""Who may talk to the server: a bearer API key, required whenever it listens beyond loopback.

The key comes from a file or an environment variable, never from the command line (where
other users of the machine could read it in the process list), and is compared in constant
time so response timing does not leak how much of a guess was right.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from mcruntime.serve.config import ServeError

KEY_ENV = "MC_API_KEY"  # where the key is looked for when no file is given
MIN_KEY_CHARS = 16  # shorter keys are guessable


def is_loopback(host: str) -> bool:
    """True only for addresses that other machines cannot reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def load_api_key(key_file: str | None = None, key_env: str | None = KEY_ENV) -> str | None:
    """The key from ``key_file`` (its first line) if given, else from ``$key_env``; None if
    neither holds one."""
    if key_file:
        try:
            text = Path(key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ServeError(f"cannot read the API key file {key_file}: {e}") from None
        lines = text.strip().splitlines()
        key = lines[0].strip() if lines else ""
        if not key:
            raise ServeError(f"the API key file {key_file} is empty")
    else:
        key = (os.environ.get(key_env) or "").strip() if key_env else ""
        if not key:
            return None
    if len(key) < MIN_KEY_CHARS or any(c.isspace() for c in key):
        raise ServeError(
            f"the API key must be at least {MIN_KEY_CHARS} characters without spaces "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return key


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond loopback without a key."""
    if api_key is None and not is_loopback(host):
        raise ServeError(
            f"--host {host} is reachable from other machines: an API key is required; put one "
            f"in a file (--api-key-file PATH) or in ${KEY_ENV}"
        )


def public(path: str) -> bool:
    """Paths served without the key: the health check and the explorer's page and assets
    (the same files for everyone, no memory's data; the page sends the key with its data
    requests, see ``mcruntime.serve.routes_explorer``)."""
    return path in ("/healthz", "/") or path.startswith("/explorer/")


def authorized(header: str | None, api_key: str | None) -> bool:
    """Whether an ``Authorization`` header carries the key (always true when none is set)."""
    if api_key is None:
        return True
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    return hmac.compare_digest(given.strip().encode(), api_key.encode())
