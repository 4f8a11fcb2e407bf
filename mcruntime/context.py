"""The working context: an ordered tiling of the whole timeline by tree nodes, plus raw tokens.

An entry ``(level, index)`` stands for tokens ``[index * B**level, (index + 1) * B**level)``;
level 0 is one raw token. The entries tile ``[0, length)`` in order. Each entry costs one model
position, so ``cost == len(entries)``. The structure is deliberately plain (a Python list) and
knows nothing of models or stores: which nodes *exist* is told by a ``NodeCount`` callable, so
the same class serves the runtime, the tests and the hypothesis state machine.

Only three edits change it: ``expand`` (one node -> its B children), ``collapse`` (B siblings
-> their parent) and ``extend`` (new raw tokens at the end). Each records the first position it
touched in ``dirty_from`` so the decoder can reuse its KV cache up to there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mcruntime.errors import ContextError
from mcstore.format import BLOCK

Entry = tuple[int, int]
NodeCount = Callable[[int], int]
"""``num_nodes(level)``: how many nodes of that level exist (are committed) in the store."""


def span(entry: Entry, block: int = BLOCK) -> tuple[int, int]:
    level, index = entry
    size = block**level
    return index * size, (index + 1) * size


@dataclass
class WorkingContext:
    """Entries tiling ``[0, length)``; see the module docstring."""

    entries: list[Entry]
    length: int
    block: int = BLOCK
    dirty_from: int | None = None

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def canonical(
        cls, length: int, num_nodes: NodeCount, *, raw_from: int | None = None, block: int = BLOCK
    ) -> WorkingContext:
        """The coarsest covering: at most B-1 entries per level, then raw tokens.

        Tokens at or after ``raw_from`` (rounded down to a block) stay raw, as do tokens whose
        covering node does not exist yet.
        """
        raw_from = length if raw_from is None else max(0, min(raw_from, length))
        entries: list[Entry] = []
        pos = 0
        top = top_level(num_nodes)
        while pos < raw_from:
            level = top
            while level > 0:
                size = block**level
                if pos % size == 0 and pos + size <= raw_from and pos // size < num_nodes(level):
                    break
                level -= 1
            if level == 0:
                break
            entries.append((level, pos // block**level))
            pos += block**level
        entries.extend((0, i) for i in range(pos, length))
        return cls(entries=entries, length=length, block=block, dirty_from=0)

    # -- queries --------------------------------------------------------------------------------

    @property
    def cost(self) -> int:
        return len(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def span(self, pos: int) -> tuple[int, int]:
        return span(self.entries[pos], self.block)

    def starts(self) -> list[int]:
        """Token start of every entry (O(n); callers batch their questions)."""
        out, b = [], self.block
        for level, index in self.entries:
            out.append(index * b**level)
        return out

    def position_of(self, entry: Entry) -> int | None:
        try:
            return self.entries.index(entry)
        except ValueError:
            return None

    def sibling_groups(self) -> Iterable[tuple[int, Entry]]:
        """(first position, parent) for every run of B complete siblings present as entries."""
        b = self.block
        entries = self.entries
        pos = 0
        n = len(entries)
        while pos + b <= n:
            level, index = entries[pos]
            if index % b == 0 and entries[pos + b - 1] == (level, index + b - 1):
                # entries are ordered and aligned, so first and last matching means all match
                yield pos, (level + 1, index // b)
                pos += b
            else:
                pos += 1

    # -- edits --------------------------------------------------------------------------------

    def _touch(self, pos: int) -> None:
        self.dirty_from = pos if self.dirty_from is None else min(self.dirty_from, pos)

    def expand(self, pos: int) -> None:
        level, index = self.entries[pos]
        if level == 0:
            raise ContextError(f"entry {pos} is a raw token; it has no finer detail")
        b = self.block
        self.entries[pos : pos + 1] = [(level - 1, index * b + k) for k in range(b)]
        self._touch(pos)

    def collapse(self, pos: int, num_nodes: NodeCount) -> Entry:
        """Replace the B siblings starting at ``pos`` by their parent; returns the parent."""
        b = self.block
        level, index = self.entries[pos]
        if index % b != 0 or pos + b > len(self.entries):
            raise ContextError(f"entry {pos} does not start a complete group of {b} siblings")
        if self.entries[pos + b - 1] != (level, index + b - 1):
            raise ContextError(f"entries {pos}..{pos + b - 1} are not {b} siblings")
        parent = (level + 1, index // b)
        if parent[1] >= num_nodes(parent[0]):
            raise ContextError(f"node {parent} is not committed yet; cannot collapse into it")
        self.entries[pos : pos + b] = [parent]
        self._touch(pos)
        return parent

    def extend(self, n: int) -> None:
        """Append ``n`` new raw tokens at the end of the timeline."""
        if n <= 0:
            return
        start = self.length
        self._touch(len(self.entries))
        self.entries.extend((0, i) for i in range(start, start + n))
        self.length += n

    def clear_dirty(self) -> None:
        self.dirty_from = None

    def copy(self) -> WorkingContext:
        return WorkingContext(list(self.entries), self.length, self.block, self.dirty_from)

    # -- invariants ---------------------------------------------------------------------------

    def check(
        self, num_nodes: NodeCount, *, budget: int | None = None, raw_recent: int = 0
    ) -> None:
        """Raise ``ContextError`` naming the first broken invariant (``docs/architecture.md#invariants``)."""
        b = self.block
        pos = 0
        for k, (level, index) in enumerate(self.entries):
            size = b**level
            if level < 0 or index < 0:
                raise ContextError(f"entry {k} = {(level, index)} is malformed")
            if index * size != pos:  # coverage + alignment: each entry starts where the last ended
                raise ContextError(
                    f"entry {k} = {(level, index)} starts at {index * size}, not {pos}"
                )
            if level > 0 and index >= num_nodes(level):
                raise ContextError(f"entry {k} = {(level, index)} is not committed in the store")
            pos += size
        if pos != self.length:
            raise ContextError(f"entries cover [0, {pos}) but the timeline is [0, {self.length})")
        if budget is not None and self.cost > budget:
            raise ContextError(f"cost {self.cost} exceeds the budget {budget}")
        raw_from = self.raw_floor(raw_recent)
        for k in range(len(self.entries) - 1, -1, -1):
            level, index = self.entries[k]
            if index * b**level < raw_from:
                break
            if level != 0:
                raise ContextError(f"entry {k} = {(level, index)} lies in the raw region")

    def raw_floor(self, raw_recent: int) -> int:
        """First token that must be raw: newest ``raw_recent`` tokens and the incomplete block."""
        return (max(0, self.length - raw_recent) // self.block) * self.block


def top_level(num_nodes: NodeCount, limit: int = 64) -> int:
    """Highest level that has at least one committed node (0 if none)."""
    level = 0
    while level < limit and num_nodes(level + 1) > 0:
        level += 1
    return level


def min_cost(
    length: int, committed: int, raw_recent: int, num_nodes: NodeCount, block: int = BLOCK
) -> int:
    """Cost of the coarsest legal working context: what any budget must at least allow."""
    raw_from = min((max(0, length - raw_recent) // block) * block, (committed // block) * block)
    return WorkingContext.canonical(length, num_nodes, raw_from=raw_from, block=block).cost
