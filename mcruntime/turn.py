"""One question on its way to an answer, as the session's steps fill it.

``Session.chat_stream`` makes a :class:`Turn` when a question arrives; the search records its
hits, the recall the passages it read back, a text reader the chat it was shown, and the end
of the turn the :class:`Answer`. ``Session.turn`` is the newest, whole or (while an answer
streams) in the making: the one place a caller (the CLI's ``--show-focus``, the server, a
benchmark) reads what an answer was made from.
"""

from __future__ import annotations

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
