"""The explorer's work on the server's memories: each view's data from the library's public
reads (``mcruntime.timeline``, ``mcruntime.history``, ``mcruntime.notes``, ``Session.find``,
``FocusPicture``), nothing re-derived in the browser.

Reads open the tree read-only at the version asked for (any commit: playback), so they never
wait for a memory's lock. Writes (a note, an answer) run on the memory's lock through
``Memories.submit``; a tag is no commit and needs none. Errors become the API's JSON errors.
"""

from __future__ import annotations

import contextlib
import dataclasses

import mcstore
from mcruntime import history, notes, timeline
from mcruntime.serve.memories import Memories, api_error, no_memory
from mcruntime.serve.wire import APIError

MAX_QUESTION_CHARS = 4000
SEARCH_K = 20  # the most hits one search returns


def picture_dict(pic) -> dict:
    """A ``FocusPicture`` as JSON: every field, the spans in the order ``report()`` gives."""
    out = dataclasses.asdict(pic)
    out["levels"] = {str(k): v for k, v in pic.levels.items()}
    return out


class Explorer:
    """The explorer's data over ``memories`` (see the module docstring)."""

    def __init__(self, memories: Memories):
        self.memories = memories

    @property
    def root(self) -> str:
        return self.memories.config.root

    @property
    def storage_options(self) -> dict | None:
        return self.memories.config.storage_options or None

    @contextlib.contextmanager
    def errors(self, name: str):
        try:
            yield
        except APIError:
            raise
        except mcstore.VersionNotFound as e:
            raise APIError(404, api_error(e, name, self.root).message, param="version",
                           code="version_not_found") from None  # fmt: skip
        except Exception as e:
            raise api_error(e, name, self.root) from e

    def tree(self, name: str, version: int | str | None = None, mode: str = "r"):
        """The memory's tree at ``version`` (None: the newest commit), read-only unless
        ``mode`` is "a"; 404 when there is no such memory."""
        with self.errors(name):
            try:
                return mcstore.open(
                    self.memories.url(name), mode, version=version,
                    storage_options=self.storage_options,
                )  # fmt: skip
            except mcstore.TreeNotFound:
                raise no_memory(name) from None

    # -- reads ---------------------------------------------------------------------------------

    def summary(self, name: str) -> dict:
        """One row of the memories view: size, levels, segments, the last commit."""
        with self.errors(name):
            t = self.tree(name)
            last = t.log(limit=1)
            return {
                "id": name, "version": t.version, "length": t.length,
                "levels": t.num_levels, "segments": len(t.segments()),
                "last": {"time_ns": int(last[0].time), "message": last[0].message}
                if last else None,
            }  # fmt: skip

    def view(self, name: str, version=None) -> dict:
        """The timeline's first data: ``timeline.overview`` plus the newest version."""
        with self.errors(name):
            t = self.tree(name, version)
            head = t.version if version is None else self.tree(name).version
            return {"id": name, "head": head, **timeline.overview(t)}

    def strips(self, name: str, version, start, stop, width) -> dict:
        with self.errors(name):
            return timeline.strips(self.tree(name, version), start, stop, width)

    def segments(self, name: str, version, start, stop, limit) -> dict:
        with self.errors(name):
            t = self.tree(name, version)
            out = timeline.segment_rows(t, start, stop, limit)
            marks = notes.read_notes(t)
            for row in out["data"]:
                row["notes"] = len(marks.get(row["id"], ()))
            return out

    def text(self, name: str, version, start, stop) -> dict:
        from mcruntime.exchange import open_for_export

        with self.errors(name):
            try:
                t, tok = open_for_export(self.memories.url(name), self.memories.base,
                                         version=version, storage_options=self.storage_options)  # fmt: skip
            except mcstore.TreeNotFound:
                raise no_memory(name) from None
            return timeline.text_page(t, tok, start, stop)

    def commits(self, name: str, version, limit) -> dict:
        with self.errors(name):
            t = self.tree(name, version)
            return {"data": history.commits(t, limit), "tags": t.tags()}

    def compare(self, name: str, a, b) -> dict:
        with self.errors(name):
            return history.compare(self.tree(name, a), self.tree(name, b))

    def notes(self, name: str, version) -> dict:
        with self.errors(name):
            t = self.tree(name, version)
            marks = notes.read_notes(t)
            return {"version": t.version, "data": {str(k): v for k, v in marks.items()}}

    def search(self, name: str, query: str, k: int) -> dict:
        """``Memories.search`` (the retrieval index's hits), each passage with the character
        ranges of the words the index matched."""
        query = check_text(query, "q")
        hits = self.memories.search(name, query, max(1, min(int(k), SEARCH_K)))
        for h in hits:
            h["highlights"] = timeline.highlights(h["text"], query)
        return {"query": query, "data": hits}

    def replay(self, name: str, version: int) -> dict:
        """The focus the chat turn committed as ``version`` read: its question asked again at
        the version before it, answer not written (what ``mc show --query`` shows)."""
        from mcruntime import Session

        with self.errors(name):
            t = self.tree(name, version)
            question = history.turn_question(t, self.memories.base.tokenizer, int(version))
            if question is None:
                raise APIError(400, f"version {version} appended no question", param="version",
                               code="not_a_turn")  # fmt: skip
            before = self.tree(name, int(version) - 1)
            with Session(before, model=self.memories.base, window=self.memories.config.window,
                         mode="r") as s:  # fmt: skip
                pic = s.ask(question, max_new_tokens=1, remember=False).answer.picture
            return {"version": int(version), "question": question, "picture": picture_dict(pic)}

    # -- writes (the Gate asks for the key where one is set) -----------------------------------

    def tag(self, name: str, tag: str, version: int | None) -> dict:
        with self.errors(name):
            t = self.tree(name, mode="a")
            v = t.tag(tag, version)
            return {"tag": tag, "version": v, "tags": t.tags()}

    def add_note(self, name: str, segment: int, text: str) -> dict:
        """Commit a note (on the memory's lock: the server's session then sees a newer tree
        and commits its next turn on top, as after any other writer)."""
        with self.errors(name):
            t = self.tree(name, mode="a")
            v = notes.add_note(t, segment, text)
            return {"version": v, "segment": int(segment)}

    def answer(self, name: str, question: str, max_tokens: int, emit) -> dict:
        """Answer ``question`` from memory as the chat API does (remembered, one commit),
        ``emit`` getting the text as it is decoded; -> the result with the focus picture the
        answer was written from. Runs on the memory's lock."""
        r = self.memories.chat(name, [], question, max_tokens, emit)
        pic = self.memories.focus(name)
        return {"text": r.text, "memory": r.memory, "picture": picture_dict(pic)}


def check_text(text: str | None, param: str, limit: int = MAX_QUESTION_CHARS) -> str:
    """A question or query: not empty, not longer than ``limit``."""
    text = (text or "").strip()
    if not text:
        raise APIError(400, f"{param} is empty", param=param, code="invalid_value")
    if len(text) > limit:
        raise APIError(400, f"{param} is longer than {limit} characters", param=param,
                       code="invalid_value")  # fmt: skip
    return text


def one_tree(url: str, storage_options: dict | None = None, **given) -> tuple:
    """``mc explore TREE``'s server: ``(ServeConfig, name)`` for the one tree at ``url`` (a
    ``NAME.mc`` folder or URL), served from its parent as memory NAME, on loopback only and
    never creating another tree. The tree must exist (``TreeNotFound`` otherwise)."""
    from mcruntime.serve.config import ServeConfig, ServeError
    from mcruntime.serve.turns import NAME_RE, SUFFIX

    url = url.rstrip("/")
    parent, _, leaf = url.rpartition("/")
    name = leaf.removesuffix(SUFFIX)
    if not leaf.endswith(SUFFIX) or not NAME_RE.fullmatch(name) or ".." in name or not parent:
        raise ServeError(
            f"{url}: the explorer serves a tree named NAME.mc (NAME: letters, digits, '.', '_', "
            "'-', '@'); `mc fork` it to such a name, or serve its folder with `mc serve`"
        )
    mcstore.open(url, "r", storage_options=storage_options).close()  # there, and a tree
    config = ServeConfig(root=parent, storage_options=storage_options or {}, create=False,
                         default_memory=name, **given)  # fmt: skip
    return config, name
