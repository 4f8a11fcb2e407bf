"""Greedy decoding that ends cleanly: stop ids, a repeated-n-gram ban and a loop stop.

A 135M model that does not know the answer degenerates into one fragment repeated until the
token limit (``1.18.3-2: 1.18.3-2: …`` for 256 tokens): slow, and when the answer is
remembered in a chat tree, the loop becomes "memory". Two guards, shared by the runtime's
sessions and the baselines so comparisons stay fair:

* no n-gram of ``ngram`` tokens is generated twice (the token that would complete a repeat is
  banned, as in Hugging Face's ``no_repeat_ngram_size``);
* the answer stops when a line repeats an earlier line of it, when a line begins the next turn
  of the prompt ("Question: …"), or when it starts a new paragraph after ``max_lines`` lines
  (short answers end at the end of the thought, not at the limit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DecodeConfig:
    ngram: int = 4  # 0 disables the n-gram ban
    max_lines: int = 6  # stop at a blank line after this many non-empty lines (0: never)
    # a line starting with one of these is the model writing the next turn of its prompt
    stop_lines: tuple[str, ...] = ("Question:", "User:", "Passages from memory")
    repeated_line: bool = True  # stop when a line repeats an earlier one

    @classmethod
    def off(cls) -> DecodeConfig:
        """Plain greedy decoding to the token limit (benchmarks that force their tokens)."""
        return cls(ngram=0, max_lines=0, stop_lines=(), repeated_line=False)


class Guard:
    """Per-answer state of the guards; ``pick`` chooses the next token, ``done`` says stop."""

    def __init__(self, config: DecodeConfig | None = None):
        self.cfg = config or DecodeConfig()
        self.out: list[int] = []
        self._seen: dict[tuple[int, ...], set[int]] = {}

    def pick(self, logits: torch.Tensor) -> int:
        n = self.cfg.ngram
        if n and len(self.out) >= n - 1:
            banned = self._seen.get(tuple(self.out[len(self.out) - n + 1 :]) if n > 1 else ())
            if banned:
                logits = logits.clone()
                logits[list(banned)] = float("-inf")
        return int(torch.argmax(logits))

    def push(self, tok: int) -> None:
        self.out.append(tok)
        n = self.cfg.ngram
        if n and len(self.out) >= n:
            key = tuple(self.out[len(self.out) - n : -1]) if n > 1 else ()
            self._seen.setdefault(key, set()).add(tok)

    def done(self, text: str) -> bool:
        """True when the decoded answer so far should end (``text`` is cut by ``trim``)."""
        lines = [ln.strip() for ln in text.split("\n")]
        complete = [ln for ln in lines[:-1] if ln]  # the last line may still be growing
        if self.cfg.repeated_line and len(complete) != len(set(complete)):
            return True
        if self.cfg.stop_lines and any(ln.startswith(self.cfg.stop_lines) for ln in lines[1:]):
            return True
        return bool(
            self.cfg.max_lines and len(complete) >= self.cfg.max_lines and text.endswith("\n\n")
        )


def trim(text: str, stop_lines: tuple[str, ...] = DecodeConfig.stop_lines) -> str:
    """The answer without a repeated line, a next turn the model began, or blank space."""
    lines = text.rstrip().split("\n")
    seen, keep = set(), []
    for k, ln in enumerate(lines):
        key = ln.strip()
        if (key and key in seen) or (k and key.startswith(stop_lines)):
            break
        seen.add(key)
        keep.append(ln)
    return "\n".join(keep).strip()


def visible(text: str, stop_lines: tuple[str, ...] = DecodeConfig.stop_lines) -> str:
    """What of a growing answer can be shown: ``trim``'s answer, less a last line that may
    still turn into the start of the next turn ("Quest…")."""
    head, _, last = text.rpartition("\n")
    if head and last.strip() and any(sl.startswith(last.strip()) for sl in stop_lines):
        text = head
    cut = trim(text, stop_lines)
    return text if text.strip() == cut else cut  # whitespace is shown as it comes
