"""The runtime: a fixed working window over an unbounded tree, focused where it matters.

``Session`` is the entry point (ingest, ask, chat_stream); the pieces below it are usable alone:
``WorkingContext`` (the tiling), ``Focus`` (the allocator), the scorers, the retrieval assist and
the KV-cached ``Window``.
"""

from mcruntime.context import ContextError, WorkingContext
from mcruntime.errors import InputError, PathTaken, SessionError, StaleGists, WindowError
from mcruntime.focus import Focus, FocusConfig

_LAZY = (
    "Answer",
    "Session",
    "SessionConfig",
    "Turn",
    "TurnStream",
)  # these import torch: when asked for


def __getattr__(name: str):
    if name in _LAZY:
        from mcruntime import session

        return getattr(session, name)
    raise AttributeError(f"module 'mcruntime' has no attribute {name!r}")


__all__ = [
    "Answer",
    "ContextError",
    "Focus",
    "FocusConfig",
    "InputError",
    "PathTaken",
    "Session",
    "SessionConfig",
    "SessionError",
    "StaleGists",
    "Turn",
    "TurnStream",
    "WindowError",
    "WorkingContext",
]
