"""``mc serve``: an OpenAI-compatible chat server whose model remembers, one tree per memory.

``ServeConfig`` (what it is told), ``Memories`` (sessions, one writer per tree, the turns),
``create_app`` (the FastAPI routes), ``serve``/``running`` (uvicorn), ``load_api_key``.
"""

from mcruntime.serve.app import create_app
from mcruntime.serve.auth import KEY_ENV, check_bind, is_loopback, load_api_key
from mcruntime.serve.config import ServeConfig, ServeError
from mcruntime.serve.memories import Memories
from mcruntime.serve.runner import running, serve
from mcruntime.serve.turns import check_name, unseen

__all__ = [
    "KEY_ENV",
    "Memories",
    "ServeConfig",
    "ServeError",
    "check_bind",
    "check_name",
    "create_app",
    "is_loopback",
    "load_api_key",
    "running",
    "serve",
    "unseen",
]
