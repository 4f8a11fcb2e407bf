"""Score inheritance: one scoring of a working context, reused for the contexts that follow it.

An expensive scorer (attention mass: one eager forward) scores the entries once per question;
each later refocus round sees a context a few edits away. An entry that was scored keeps its
score; one that was not gets the score of its nearest scored ancestor (a child of an expanded
entry inherits the parent's want), or else the mean of its scored descendants (a parent made by
a collapse stands for its children). See ``docs/architecture.md#focus``.
"""

from __future__ import annotations

import numpy as np

from mcruntime.context import Entry


class Inherited:
    """Scores of one working context, extended to the entries of later ones by ancestry.

    ``top``: the highest level an ancestor can sit at (the tree's ``num_levels - 1``); the
    default is one level above the coarsest scored entry, which covers every collapse of it.
    """

    def __init__(
        self, entries: list[Entry], scores: np.ndarray, block: int, *, top: int | None = None
    ):
        self.block = block
        self.exact = dict(zip(entries, np.asarray(scores).tolist(), strict=True))
        highest = max((level for level, _ in self.exact), default=0) + 1
        self.top = highest if top is None else max(int(top), highest - 1)
        self.below: dict[Entry, list[float]] = {}  # ancestor -> [sum, count] of scored entries
        for (level, index), v in self.exact.items():
            for up in range(1, self.top - level + 1):
                acc = self.below.setdefault((level + up, index // block**up), [0.0, 0])
                acc[0] += v
                acc[1] += 1

    def __call__(self, entries: list[Entry]) -> np.ndarray:
        out = np.zeros(len(entries))
        b = self.block
        for k, (level, index) in enumerate(entries):
            v = self.exact.get((level, index))
            up = 1
            while v is None and level + up <= self.top:
                v = self.exact.get((level + up, index // b**up))
                up += 1
            if v is None:
                acc = self.below.get((level, index))
                v = acc[0] / acc[1] if acc else 0.0
            out[k] = v
        return out
