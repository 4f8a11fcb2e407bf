"""What a server is told at start: where its memories live, which model answers, and its limits.

Every default of ``mc serve`` lives here; the CLI passes only what a person set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mcmodels.defaults import DEFAULT_MODEL, DEFAULT_READER  # torch-free: the one definition
from mcruntime.errors import SessionError


class ServeError(SessionError):
    """A server that must not start as configured (e.g. exposed without an API key)."""

    exit_code = 2


@dataclass
class ServeConfig:
    root: str  # a folder or fsspec URL; memory NAME is the tree ROOT/NAME.mc
    storage_options: dict = field(default_factory=dict)
    model: str = DEFAULT_MODEL  # a name, folder or .gguf for mcmodels.load_base
    gistnet: str | None = None  # None: the shipped GistNet for the model (or the untrained one)
    # who writes the answers (mcmodels.readers): "auto" is the 1.5B reader where installed,
    # else the keeper; one loaded reader serves every memory, one answer at a time
    reader: str = DEFAULT_READER
    window: int | None = None  # model positions per step; None: SessionConfig's
    session: dict = field(default_factory=dict)  # further SessionConfig fields, by name
    host: str = "127.0.0.1"
    port: int = 8000
    # model work runs on a thread pool this large: requests on different memories run in
    # parallel up to this many; requests on one memory are always serialised
    concurrency: int = 2
    max_open: int = 8  # sessions kept open (each holds a KV cache); least recently used close
    max_tokens: int = 1024  # the largest max_tokens a request may ask for
    default_max_tokens: int = 256  # a request's max_tokens when it names none
    max_request_bytes: int = 4 << 20  # request bodies above this get 413
    # the memory of a request that names none (no X-Memory header, no `user`); None: refuse
    default_memory: str | None = "default"
    create: bool = True  # a chat or document for an unknown memory creates its tree
    # the most memories (trees under ROOT) this server lets clients create; then 403. None: no
    # limit. Counted per server: two servers on one ROOT may each create up to the limit's edge
    max_memories: int | None = None
    api_key: str | None = None  # bearer key; required when host is not a loopback address

    def __post_init__(self) -> None:
        if not self.root or not str(self.root).strip():
            raise ServeError("ROOT is empty: give a folder or a URL that holds the memories")
        self.root = str(self.root).rstrip("/") or "/"
        for name, lo in (
            ("concurrency", 1),
            ("max_open", 1),
            ("max_tokens", 1),
            ("default_max_tokens", 1),
            ("max_request_bytes", 1024),
        ):
            if int(getattr(self, name)) < lo:
                raise ServeError(f"{name} must be at least {lo}, not {getattr(self, name)}")
        if self.max_memories is not None and int(self.max_memories) < 1:
            raise ServeError(
                f"max_memories must be at least 1, not {self.max_memories} (no new memories at "
                "all: turn creation off)"
            )
        self.default_max_tokens = min(self.default_max_tokens, self.max_tokens)
        if not 0 <= int(self.port) <= 65535:
            raise ServeError(f"port {self.port} is not in 0-65535")
