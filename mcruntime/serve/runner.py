"""Running the app with uvicorn: in the foreground (``mc serve``) or on a thread (tests, bench).

The listening socket is bound here, before uvicorn starts, so a port that is taken is one
``ServeError`` line rather than uvicorn's log, and ``port=0`` gets a free port with no race.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from mcruntime.serve.config import ServeError


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _server(app) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))


def serve(app, host: str, port: int) -> None:
    """Serve until Ctrl-C or SIGTERM (uvicorn finishes the requests in flight first)."""
    sock = bind(host, port)
    try:
        _server(app).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down on: a normal stop
        pass
    finally:
        sock.close()


@contextlib.contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 120) -> Iterator[str]:
    """Serve ``app`` on a thread; yields its base URL (``port=0``: a free port). Stopped, with
    the app's shutdown run, on exit."""
    sock = bind(host, port)
    port = sock.getsockname()[1]
    server = _server(app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="mc-serve", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(10)
            sock.close()
            raise RuntimeError("the server did not start (see the log above)")
        time.sleep(0.02)
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    try:
        yield f"http://{shown}:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
