"""One question on its way to an answer, as the session's steps fill it.

``Session.chat_stream`` makes a :class:`Turn` when a question arrives and hands it back in a
:class:`TurnStream`; the search records its hits, the recall the passages it read back, a text
reader the chat it was shown, and the end of the turn the :class:`Answer`. ``Session.ask``
returns the whole turn. What an answer was made from (the CLI's ``--show-focus``, the server, a
benchmark) is read from the turn that made it, never from whatever the session did last.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from mcruntime.picture import FocusPicture


@dataclass
class Answer:
    text: str
    tokens: list[int]
    focus: list[dict] = field(default_factory=list)  # expanded spans, with their sources
    timings: dict = field(default_factory=dict)
    first_logits: torch.Tensor | None = None  # the distribution the answer started from
    recall: list[dict] = field(default_factory=list)  # passages read back before the question
    picture: FocusPicture | None = None  # the focus the answer was written from (focus = its spans)


@dataclass
class Turn:
    question: str = ""
    hits: list = field(default_factory=list)  # what the retrieval assist found for it
    recall: list[dict] = field(default_factory=list)  # passages read back before the question
    prompt: list[dict] = field(default_factory=list)  # the chat a text reader was shown
    answer: Answer | None = None  # None until the turn ends

    @property
    def text(self) -> str:
        """The answer as remembered ("" while it is being written)."""
        return self.answer.text if self.answer is not None else ""


class TurnStream(Iterator[str]):
    """An answer as it is decoded: an iterator of its text, piece by piece; ``turn`` is the
    :class:`Turn` being filled, whole once the iteration has ended. A stream is read once."""

    def __init__(self, turn: Turn, pieces: Iterator[str]):
        self.turn = turn
        self._pieces = pieces

    def __next__(self) -> str:
        return next(self._pieces)
