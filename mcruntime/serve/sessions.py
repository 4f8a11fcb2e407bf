"""The server's open sessions: one per memory in use, the least recently used closed first.

A session holds a window and its KV cache, so only ``max_open`` stay open; a memory that is
asked again after its session closed is opened again from storage (nothing is lost: every
answer was committed before its response). Sessions share the base model and the reader the
server loaded, and the GistNet and LensNet the first session settled on. Opening is where a
memory is created: at most ``max_memories`` under the root (403 beyond), never over someone's
files at ``ROOT/NAME.mc`` (409), and a tree another process is creating is opened again a
moment later before it is believed damaged.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import mcstore
from mcruntime.errors import PathTaken
from mcruntime.hooks import Hooks
from mcruntime.location import check_new
from mcruntime.serve.config import ServeConfig
from mcruntime.serve.wire import APIError

log = logging.getLogger(__name__)

OPEN_TRIES = 5  # opens of a tree that reads as damaged (maybe mid-create), 0.75 s in all


class PromptMeter(Hooks):
    """Session hooks that read the window's length at the first model step of an answer: the
    positions the model was prompted with (template, working context, recall, question)."""

    def __init__(self) -> None:
        self.window = None
        self.prompt: int | None = None

    def on_logits(self, logits):
        if self.prompt is None and self.window is not None:
            self.prompt = self.window.length
        return logits


@dataclass
class Opened:
    session: object
    meter: PromptMeter


def no_memory(name: str) -> APIError:
    """The 404 of a memory whose tree does not exist."""
    return APIError(404, f"no memory named {name!r}", param="memory", code="memory_not_found")


@dataclass
class Models:
    """What every session of the server shares: the base model and the reader (loaded once,
    by ``load``), the nets the first session settled on."""

    load: Callable[[], None]  # loads base and reader (idempotent)
    base: Callable[[], object]
    reader: Callable[[], object]  # None: the keeper answers
    gistnet: object = None  # a path at first; the loaded net once a session has it
    lensnet: object = None


class SessionCache:
    """Open sessions by memory name, least recently used first. ``names`` lists the memories
    under the root; ``busy(name)`` says whether work on it runs (then it is not closed);
    ``later(fn)`` runs a close off the caller's thread."""

    def __init__(self, config: ServeConfig, session_config, models: Models, *,
                 url: Callable[[str], str], names: Callable[[], list[str]],
                 busy: Callable[[str], bool], later: Callable[[Callable], None]):  # fmt: skip
        self.config, self.session_config, self.models = config, session_config, models
        self.url, self.names, self.busy, self.later = url, names, busy, later
        self._open: OrderedDict[str, Opened] = OrderedDict()
        self._guard = threading.Lock()  # touched by worker threads and the event loop
        self._creating = threading.Lock()  # one creation at a time: max_memories holds

    @property
    def opened(self) -> list[str]:
        with self._guard:
            return list(self._open)

    def get(self, name: str, *, create: bool) -> Opened:
        """The memory's open session, opened (or created, with ``create``) if it is not."""
        with self._guard:
            o = self._open.get(name)
            if o is not None:
                self._open.move_to_end(name)
                return o
        o = self._start(name, create)
        with self._guard:
            self._open[name] = o
        return o

    def restart(self, name: str) -> Opened:
        """Drop the session (its view of the tree is stale) and open the newest commit."""
        self.discard(name)
        return self.get(name, create=self.config.create)

    def discard(self, name: str) -> None:
        with self._guard:
            o = self._open.pop(name, None)
        if o is not None:
            with contextlib.suppress(Exception):
                o.session.close()

    def close_idle(self) -> None:
        """Close the least recently used sessions beyond ``max_open`` (only idle ones: the
        event loop holds the locks, so a memory no work holds has none running)."""
        with self._guard:
            extra = len(self._open) - self.config.max_open
            idle = [n for n in self._open if not self.busy(n)]
            closing = [self._open.pop(n) for n in idle[: max(0, extra)]]
        for o in closing:
            with contextlib.suppress(RuntimeError):  # the pool is shutting down: close() will
                self.later(o.session.close)

    def close(self) -> None:
        with self._guard:
            opened, self._open = list(self._open.values()), OrderedDict()
        for o in opened:
            with contextlib.suppress(Exception):
                o.session.close()

    def _start(self, name: str, create: bool) -> Opened:
        self.models.load()
        if create and self.config.max_memories is not None:
            with self._creating:  # counted and created together: concurrent ones see it
                if self._room_for(name):
                    return self._open_session(name, True)
            return self._open_session(name, False)
        return self._open_session(name, create)

    def _room_for(self, name: str) -> bool:
        """Whether a tree may be created for ``name`` (True), or it exists (False); 403
        when ROOT holds ``max_memories`` memories already."""
        have = self.names()
        if name in have:
            return False
        if len(have) >= self.config.max_memories:
            raise APIError(
                403,
                f"this server keeps at most {self.config.max_memories} memories and holds "
                f"{len(have)}; no memory named {name!r} can be created: use an existing one",
                param="memory",
                code="memory_limit_reached",
            )
        return True

    def _open_session(self, name: str, create: bool) -> Opened:
        """Open (or create) the memory's session. A tree another process is creating reads
        as damaged between its writes (a root without a commit yet, a folder holding only its
        first files): opened again a moment later before that is believed."""
        for attempt in range(OPEN_TRIES):
            try:
                return self._open_once(name, create)
            except (mcstore.CorruptTree, PathTaken):
                if attempt == OPEN_TRIES - 1:
                    raise
                log.info("memory %s: not whole yet (being created?); opening it again", name)
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    def _open_once(self, name: str, create: bool) -> Opened:
        from mcruntime.session import Session

        if create:  # never a tree among someone's files at ROOT/NAME.mc (PathTaken: 409)
            check_new(self.url(name))
        meter = PromptMeter()
        m = self.models
        m.load()
        reader = m.reader()
        try:
            s = Session(
                self.url(name),
                model=m.base(),
                gistnet=m.gistnet,
                lensnet=m.lensnet,
                window=self.config.window,
                storage_options=self.config.storage_options or None,
                config=self.session_config,
                create=create,
                hooks=meter,
                reader=reader if reader is not None else "keeper",
            )
        except mcstore.TreeNotFound:
            raise no_memory(name) from None
        meter.window = s.window
        with self._guard:  # later sessions share the nets the first one settled on
            m.gistnet, m.lensnet = s.gistnet, s.lensnet
        if s.created:
            log.info("created memory %s", name)
        return Opened(s, meter)
