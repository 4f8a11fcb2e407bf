"""The server's memories: one ``Session`` per tree under the root, one writer per tree.

Requests on one memory are serialised and model work runs on a thread pool
(``mcruntime.serve.scheduler``); which of a request's turns are new is decided by the pure
functions of ``mcruntime.serve.turns``. A request is all or nothing: the question and its
answer are ONE commit (``Session.remember_turns``), and a 200 is only sent once it is in. A commit that loses the race
against another process (``CommitConflict``) reopens the tree at its newest commit and commits
the same turns on top (the answer is not written again), up to ``COMMIT_TRIES`` times; then 409
with neither stored, so sending it again never stores a question twice. (Earlier turns the
request carries are one commit before the answer is written, so it is written from them; if
they are in, the request sent again finds them there and does not add them again.)

Which of a request's messages are new: OpenAI clients send the whole conversation each time.
The tree already holds the turns this server remembered, so the request's earlier user and
assistant messages are matched against the newest chat turns of the tree (``unseen``); only
those after the longest overlap are appended (one commit), before the answer is written from
memory. A request whose question and answer the tree already holds right after that history
(sent again after its response was lost) gets the stored answer and stores nothing (``answered``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import mcstore
from mcruntime.errors import InputError, SessionError, WindowError
from mcruntime.render import LABELS, Role, role_of
from mcruntime.serve.config import ServeConfig, ServeError
from mcruntime.serve.metrics import ServeMetrics
from mcruntime.serve.scheduler import Scheduler
from mcruntime.serve.sessions import Models, Opened, SessionCache, no_memory
from mcruntime.serve.turns import (
    NAME_RE,
    SUFFIX,
    TurnResult,
    answered,
    check_name,
    missing_tail,
    unseen,
)
from mcruntime.serve.wire import APIError

log = logging.getLogger(__name__)

COMMIT_TRIES = 4  # a request's commit, tried on the newest tree after a conflict, then 409


class _Landed(Exception):
    """A commit is in, but a later commit of the same step (the retrieval index's) met another
    writer: the step is done, the session's view is stale."""


class Memories:
    """Sessions over the trees under ``config.root``, the base model they share, and the
    scheduling of work on them (see the module docstring)."""

    def __init__(self, config: ServeConfig, base=None):
        from mcruntime.session import SessionConfig

        self.config = config
        try:
            self.session_config = SessionConfig(**config.session)
        except TypeError as e:
            raise ServeError(f"unknown session option: {e}") from None
        self.base = base
        self.metrics = ServeMetrics()  # what GET /metrics shows
        self.reader = None  # the loaded text reader; None: the keeper answers
        self._reader_ready = False
        self.scheduler = Scheduler(
            config.concurrency, after=lambda _name: self.sessions.close_idle()
        )
        models = Models(self.load, lambda: self.base, lambda: self.reader, config.gistnet)
        self.sessions = SessionCache(
            config, self.session_config, models, url=self.url, names=self.names,
            busy=self.scheduler.locked, later=self.scheduler.pool.submit,
        )  # fmt: skip

    # -- setup ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the base model and the reader (once; a server does it before it listens)."""
        import mcmodels

        if self.base is None:
            self.base = mcmodels.load_base(self.config.model)
        if not self._reader_ready:
            self.reader = mcmodels.load_reader(self.config.reader)
            self._reader_ready = True

    @property
    def reader_name(self) -> str:
        """Who writes the answers: the text reader's name, or "keeper"."""
        return self.reader.name if self.reader is not None else "keeper"

    @property
    def model_ids(self) -> list[str]:
        """The names a request's ``model`` may use: the model's own name, then the one asked for."""
        self.load()
        return list(dict.fromkeys([self.base.name, self.config.model]))

    @property
    def locked(self) -> list[str]:
        """The memories a request holds or waits for (the only ones with a lock kept)."""
        return self.scheduler.names

    @property
    def opened(self) -> list[str]:
        """The memories with an open session, least recently used first."""
        return self.sessions.opened

    def url(self, name: str) -> str:
        return f"{self.config.root}/{check_name(name)}{SUFFIX}"

    def close(self) -> None:
        self.scheduler.shutdown()
        self.sessions.close()

    # -- scheduling (event loop side) ----------------------------------------------------------

    async def submit(self, name: str, fn: Callable, *args) -> asyncio.Future:
        """Run ``fn(*args)`` on the pool once no other work on ``name`` runs (``Scheduler``);
        afterwards, sessions beyond ``max_open`` that are idle are closed."""
        return await self.scheduler.submit(name, fn, *args)

    async def read(self, fn: Callable, *args):
        """Run read-only work (no lock: mcstore readers see whole commits only)."""
        return await self.scheduler.read(fn, *args)

    # -- committing (worker side) ---------------------------------------------------------------

    def _retrying(self, name: str, o: Opened, op: Callable[[object], None]) -> Opened:
        """``op(session)``, which makes at most one commit; when it loses the race against
        another writer (``CommitConflict``, nothing of it stored), reopen the tree at its
        newest commit and run it again, up to ``COMMIT_TRIES`` times, then 409 (nothing of the
        step stored). ``_Landed`` from ``op``: its commit is in but the session is stale."""
        for attempt in range(COMMIT_TRIES):
            try:
                op(o.session)
                return o
            except _Landed:
                return self.sessions.restart(name)
            except mcstore.CommitConflict:
                self.metrics.conflicts.inc()
                log.info("memory %s: another writer committed; retrying at its commit", name)
                if attempt == COMMIT_TRIES - 1:
                    raise APIError(
                        409,
                        f"memory {name!r} is being written by another process; this request's "
                        "question was not stored: send it again",
                        type="conflict_error",
                        code="conflict",
                    ) from None
                time.sleep(random.uniform(0, 0.05 * 2**attempt))  # writers that met, apart
                o = self.sessions.restart(name)
        raise AssertionError("unreachable")

    @staticmethod
    def _commit(s, fn: Callable[[], object]) -> None:
        """``fn()``: one commit of the session's (then its retrieval index's). A conflict
        after the first landed (the index chunk met another writer) is ``_Landed``."""
        version = s.tree.version
        try:
            fn()
        except mcstore.CommitConflict:
            if s.tree.version == version:
                raise
            raise _Landed() from None

    def _remember(self, turns_of: Callable[[object], list[tuple[str, str]]]) -> Callable:
        """An op that commits the turns ``turns_of(session)`` (asked again after each reopen)
        in ONE commit, as the segments ``Session.remember_turns`` writes: all or none."""

        def op(s) -> None:
            turns = turns_of(s)
            if turns:
                self._commit(s, lambda: s.remember_turns(turns))
                self.metrics.commits.labels("chat").inc()

        return op

    @staticmethod
    def chat_tail(s, n: int) -> list[tuple[str, str]]:
        """The newest ``n`` chat turns of the session's tree, oldest first."""
        out: list[tuple[str, str]] = []
        if n <= 0:
            return out
        tok = s.base.tokenizer
        for seg in reversed(s.tree.segments()):
            role = role_of(seg.source)
            if role is Role.DOCUMENT:
                continue
            text = tok.decode(s.tree.tokens(seg.start, seg.stop).tolist())
            out.append((str(role), text.strip().removeprefix(LABELS[role].strip()).strip()))
            if len(out) == n:
                break
        return out[::-1]

    # -- the work ------------------------------------------------------------------------------

    def chat(
        self,
        name: str,
        history: list[tuple[str, str]],
        question: str,
        max_tokens: int,
        emit: Callable[[str], None] | None = None,
    ) -> TurnResult:
        """Append the unseen ``history``, answer ``question`` from memory (``emit`` gets the
        text as it is decoded), remember the question and its answer in one commit; returns
        when it is committed. A request the tree holds the answer to already (sent again after
        its response was lost) gets that answer and stores nothing."""
        with self._errors(name):
            o = self.sessions.get(name, create=self.config.create)
            if history:
                before = answered(history, question, self.chat_tail(o.session, len(history) + 2))
                if before is not None:
                    log.info("memory %s: the request was answered before; not stored again", name)
                    if before and emit is not None:
                        emit(before)
                    return self._result(name, o, before, None, max_tokens)
            o = self._retrying(
                name, o, self._remember(lambda s: unseen(history, self.chat_tail(s, len(history))))
            )
            s, o.meter.prompt = o.session, None
            sent = []
            stream = s.chat_stream(question, max_new_tokens=max_tokens, remember=False)
            try:
                for piece in stream:
                    sent.append(piece)
                    if emit is not None:
                        emit(piece)
            except BaseException:
                self.sessions.discard(name)  # the window may hold half a turn
                raise
            ans = stream.turn.answer
            rest = missing_tail("".join(sent), ans.text)
            if rest and emit is not None:
                emit(rest)
            length = s.tree.length  # what the answer was written from
            pair = [("user", question), ("assistant", ans.text)]

            def pair_of(s) -> list[tuple[str, str]]:
                if s.tree.length < length:  # reopened on a tree that shrank: not ours to add to
                    raise mcstore.CommitConflict(f"memory {name!r} was rewritten meanwhile")
                return pair

            prompt = o.meter.prompt
            o = self._retrying(name, o, self._remember(pair_of))
            result = self._result(name, o, ans.text, ans.tokens, max_tokens, prompt)
            self.metrics.on_answer(
                ans.timings, result.prompt_tokens, result.completion_tokens, len(ans.recall)
            )
            self.metrics.on_tree(name, o.session.tree)
            return result

    def _result(self, name, o, text, tokens, max_tokens, prompt=None) -> TurnResult:
        t = o.session.tree
        n = len(tokens) if tokens is not None else len(o.session.base.tokenizer.encode(text))
        return TurnResult(
            text=text,
            completion_tokens=n,
            prompt_tokens=prompt or 0,
            finish_reason="length" if tokens is not None and n >= max_tokens else "stop",
            memory={"name": name, "version": t.version, "length": t.length},
        )

    def ingest(self, name: str, text: str, source: str, tags: list[str]) -> dict:
        """Append a document (one commit); returns where the memory stands."""
        with self._errors(name):
            o = self.sessions.get(name, create=self.config.create)
            done = []

            def op(s) -> None:
                n = s.tree.length
                try:
                    self._commit(s, lambda: s.ingest(text, source=source, tags=tags))
                finally:
                    if s.tree.length > n:
                        done.append(s.tree.length - n)

            o = self._retrying(name, o, op)
            t = o.session.tree
            self.metrics.commits.labels("document").inc()
            self.metrics.on_tree(name, t)
            return {
                "object": "memory.document",
                "memory": name,
                "source": source,
                "tags": list(tags),
                "tokens": done[0] if done else 0,
                "version": t.version,
                "length": t.length,
            }

    def forget(self, name: str, rule: dict, purge: bool = False, drop_tags: bool = False) -> dict:
        """Forget what ``rule`` names (``Session.forget``: document, source or match) in one
        commit; with ``purge``, then expire the older versions that hold it and delete their
        objects (``mcstore.purge``)."""
        with self._errors(name):
            o = self.sessions.get(name, create=False)
            done = []

            def op(s) -> None:
                done[:] = [s.forget(**rule)]
                if done[0].version is not None:
                    self.metrics.commits.labels("forget").inc()

            o = self._retrying(name, o, op)
            out = {"object": "memory.forgotten", "memory": name, **done[0].as_dict()}
            out.pop("spans")
            if purge and done[0].version is not None:
                rep = mcstore.purge(
                    self.url(name),
                    storage_options=self.config.storage_options or None,
                    drop_tags=drop_tags,
                )
                out["purge"] = {k: v for k, v in rep.as_dict().items() if k != "url"}
            t = o.session.tree
            self.metrics.on_tree(name, t)
            return {**out, "version": t.version, "length": t.length}

    def names(self) -> list[str]:
        """The memories under ROOT (every ``NAME.mc`` with a valid name), from one listing."""
        with self._errors("*"):
            be = mcstore.open_backend(self.config.root, self.config.storage_options or None)
            found = (n.removesuffix(SUFFIX) for n in be.listdir("") if n.endswith(SUFFIX))
            return sorted(n for n in found if NAME_RE.fullmatch(n) and ".." not in n)

    def info(self, name: str) -> dict:
        """Length, levels, segments and the newest commits of a memory, read from storage."""
        with self._errors(name):
            t = self._read_tree(name)
            info = t.info(storage_bytes=False)
            return {
                "object": "memory",
                "id": name,
                "version": t.version,
                "length": t.length,
                "levels": info["levels"],
                "segments": info["segments"],
                "tags": info["tags"],
                "log": [
                    {"version": e.version, "time": e.time, "message": e.message, "length": e.length}
                    for e in t.log(limit=10)
                ],
            }

    def _read_tree(self, name: str):
        """The memory's tree, read-only at its newest commit (404 if there is none)."""
        try:
            return mcstore.open(
                self.url(name), "r", storage_options=self.config.storage_options or None
            )
        except mcstore.TreeNotFound:
            raise no_memory(name) from None

    def search(self, name: str, query: str, k: int = 5) -> list[dict]:
        """The passages a memory holds on ``query`` (``Session.find``), nothing stored."""
        with self._errors(name):
            return self.sessions.get(name, create=False).session.find(query, k)

    def focus(self, name: str):
        """The ``FocusPicture`` of the memory's session (the explorer's ask): after an answer,
        the focus it was written from; before any, the focus the session opens with. Called on
        the memory's lock right after ``chat``, it is that answer's."""
        with self._errors(name):
            s = self.sessions.get(name, create=False).session
            return s.turn.answer.picture if s.turn.answer is not None else s.focus_picture()

    def documents(self, name: str) -> list[dict]:
        """A memory's segments: id, source, tags, role, created (ns), tokens."""
        with self._errors(name):
            t = self._read_tree(name)
            return [
                {"id": i, "source": sg.source, "tags": list(sg.tags), "role": str(role_of(sg.source)),
                 "time_ns": int(sg.time), "tokens": sg.stop - sg.start}
                for i, sg in enumerate(t.segments())
            ]  # fmt: skip

    def export(self, name: str):
        """The memory's JSON lines (``mcruntime.exchange``) as an iterator, opened here so a
        missing memory or another tokenizer is an error response, not a broken stream."""
        from mcruntime.exchange import export_lines, open_for_export

        with self._errors(name):
            try:
                tree, tok = open_for_export(
                    self.url(name), self.base, storage_options=self.config.storage_options or None
                )
            except mcstore.TreeNotFound:
                raise no_memory(name) from None
        return export_lines(tree, tok)

    @contextlib.contextmanager
    def _errors(self, name: str):
        """Library errors as API errors; the tree's URL (the server's storage) stays private."""
        try:
            yield
        except APIError:
            raise
        except Exception as e:
            raise api_error(e, name, self.config.root) from e


def api_error(e: Exception, name: str, root: str) -> APIError:
    msg = str(e).replace(f"{root}/{name}{SUFFIX}", f"memory {name!r}").replace(root, "ROOT")
    if isinstance(e, mcstore.TreeNotFound):
        return APIError(404, msg, param="memory", code="memory_not_found")
    if isinstance(e, mcstore.CommitConflict):
        return APIError(409, msg, type="conflict_error", code="conflict")
    if isinstance(e, mcstore.BindingMismatch):
        return APIError(409, msg, type="conflict_error", code="binding_mismatch")
    if isinstance(e, mcstore.StoreAccessError):
        return APIError(503, msg, type="server_error", code="storage_unavailable")
    if isinstance(e, mcstore.CorruptTree):
        return APIError(500, msg, type="server_error", code="corrupt_memory")
    if isinstance(e, mcstore.InvalidArgument):  # what the request asked the store to write
        return APIError(400, msg, code="invalid_input")
    if isinstance(e, WindowError):
        return APIError(400, msg, code="context_length_exceeded")
    if isinstance(e, InputError):
        return APIError(400, msg, code="invalid_input")
    if isinstance(e, SessionError):
        return APIError(409, msg, type="conflict_error", code="memory_unusable")
    from mcmodels.errors import PositionError

    if isinstance(e, PositionError):
        return APIError(400, msg, code="context_length_exceeded")
    log.error("memory %s: unexpected error", name, exc_info=e)
    return APIError(500, f"internal error ({type(e).__name__})", type="server_error")
