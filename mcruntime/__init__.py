"""The runtime: a fixed working window over an unbounded tree, focused where it matters.

``Session`` is the entry point (ingest, ask, chat_stream); the pieces below it are usable alone:
``WorkingContext`` (the tiling), ``Focus`` (the allocator), the scorers, the retrieval assist and
the KV-cached ``Window``.
"""

from mcruntime.context import ContextError, WorkingContext
from mcruntime.focus import Focus, FocusConfig
from mcruntime.session import Answer, Session, SessionConfig, SessionError

__all__ = [
    "Answer",
    "ContextError",
    "Focus",
    "FocusConfig",
    "Session",
    "SessionConfig",
    "SessionError",
    "WorkingContext",
]
