"""Long-context tasks generated offline: passkey, RULER-style needles and tracking, a small world.

Every task is a long *history* (what gets ingested into the tree), a *question* asked at the end
and the expected *answers*. The filler is real held-out text, shuffled paragraph by paragraph
with a fixed seed, so every block of the history differs (a repeated filler sentence would make
all gists identical and the task trivial). Needles are placed at a requested depth, measured in
tokens of the base model's tokenizer, so "depth 0.25 of a 64k history" means the same thing for
every system compared.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Encode = Callable[[str], list[int]]


@dataclass
class Task:
    kind: str
    history: str
    question: str
    answers: list[str]
    n_tokens: int
    depths: list[float] = field(default_factory=list)
    seed: int = 0
    meta: dict = field(default_factory=dict)

    def score(self, output: str) -> float:
        """Fraction of the expected answers found in the output (1.0 or 0.0 for one answer)."""
        text = norm(output)
        return sum(norm(a) in text for a in self.answers) / len(self.answers)


def norm(s: str) -> str:
    """Lower case, runs of white space as one space: how an answer is compared."""
    return re.sub(r"\s+", " ", s.lower()).strip()


class Haystack:
    """Paragraphs of real text, in a seeded order, measured in tokens of one tokenizer."""

    def __init__(
        self, texts: Sequence[str], encode: Encode, *, min_chars: int = 40, max_chars: int = 1200
    ):
        paras: list[str] = []
        for text in texts:
            for p in re.split(r"\n\s*\n", text):
                for piece in _pieces(p.strip(), max_chars):  # sizes stay controllable
                    if len(piece) >= min_chars:
                        paras.append(piece)
        if not paras:
            raise ValueError("the haystack needs at least one paragraph of real text")
        self.paragraphs = paras
        self.encode = encode
        self._ntok: dict[int, int] = {}

    def tokens_of(self, k: int) -> int:
        if k not in self._ntok:
            self._ntok[k] = len(self.encode(self.paragraphs[k] + "\n\n"))
        return self._ntok[k]

    def fill(self, n_tokens: int, rng: random.Random) -> list[tuple[str, int]]:
        """Paragraphs (with their token counts) adding up to about ``n_tokens``."""
        order = list(range(len(self.paragraphs)))
        rng.shuffle(order)
        out, total, i = [], 0, 0
        while total < n_tokens:
            k = order[i % len(order)]
            if i and i % len(order) == 0:
                rng.shuffle(order)  # a long history reuses text, but never in the same order
            n = self.tokens_of(k)
            out.append((self.paragraphs[k], n))
            total += n
            i += 1
        return out


def _pieces(p: str, max_chars: int) -> list[str]:
    """A paragraph cut at line ends into pieces of at most about ``max_chars``."""
    if len(p) <= max_chars:
        return [p]
    out, cur = [], ""
    for line in p.splitlines(keepends=True):
        if cur and len(cur) + len(line) > max_chars:
            out.append(cur.strip())
            cur = ""
        cur += line
    if cur.strip():
        out.append(cur.strip())
    return [x[i : i + 2 * max_chars] for x in out for i in range(0, len(x), 2 * max_chars)]


def _weave(
    filler: list[tuple[str, int]], needles: list[tuple[float, str]], encode: Encode
) -> tuple[str, int, list[float]]:
    """Insert each needle between paragraphs at its token depth; return text, tokens, depths."""
    total = sum(n for _, n in filler)
    targets = sorted((d * total, s) for d, s in needles)
    parts, pos, depths, t = [], 0, [], 0
    for text, n in filler:
        while t < len(targets) and targets[t][0] <= pos:
            parts.append(targets[t][1])
            depths.append(pos / max(1, total))
            t += 1
        parts.append(text)
        pos += n
    for _, s in targets[t:]:
        parts.append(s)
        depths.append(1.0)
    history = "\n\n".join(parts) + "\n\n"
    return history, len(encode(history)), depths


def digits(rng: random.Random, n: int = 5) -> str:
    """A random ``n``-digit number (no leading zero), as text."""
    return str(rng.randint(10 ** (n - 1), 10**n - 1))


def passkey(hay: Haystack, n_tokens: int, depth: float, seed: int) -> Task:
    rng = random.Random(seed)
    key = digits(rng)
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    filler = hay.fill(n_tokens - 30, rng)
    history, n, depths = _weave(filler, [(depth, needle)], hay.encode)
    return Task("passkey", history, "What is the pass key?", [key], n, depths, seed)


_KEYS = [
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo",
    "juniper", "kestrel", "lumen", "marble", "nectar", "onyx", "pebble", "quartz", "raven",
    "saffron", "tundra", "umber", "velvet", "willow", "xenon", "yarrow", "zephyr",
]  # fmt: skip


def multikey(hay: Haystack, n_tokens: int, seed: int, *, keys: int = 4) -> Task:
    """Several needles with similar keys; the question asks for one (RULER niah_multikey)."""
    rng = random.Random(seed)
    names = rng.sample(_KEYS, keys)
    values = [digits(rng, 6) for _ in names]
    needles = [
        (rng.random(), f"The special magic number for {k} is {v}.")
        for k, v in zip(names, values, strict=True)
    ]
    target = rng.randrange(keys)
    filler = hay.fill(n_tokens - 20 * keys, rng)
    history, n, depths = _weave(filler, needles, hay.encode)
    q = f"What is the special magic number for {names[target]}?"
    meta = {"target_depth": needles[target][0], "keys": names}
    return Task("multikey", history, q, [values[target]], n, depths, seed, meta)


def multivalue(hay: Haystack, n_tokens: int, seed: int, *, values: int = 3) -> Task:
    """One key with several values spread out; every value must be recalled (RULER multivalue)."""
    rng = random.Random(seed)
    key = rng.choice(_KEYS)
    vals = [digits(rng, 6) for _ in range(values)]
    needles = [(rng.random(), f"One of the special magic numbers for {key} is {v}.") for v in vals]
    filler = hay.fill(n_tokens - 20 * values, rng)
    history, n, depths = _weave(filler, needles, hay.encode)
    q = f"What are all the special magic numbers for {key}?"
    return Task("multivalue", history, q, vals, n, depths, seed)


def variable_tracking(hay: Haystack, n_tokens: int, seed: int, *, hops: int = 3) -> Task:
    """A chain of assignments VAR A = 12345, VAR B = VAR A, … (RULER vt)."""
    rng = random.Random(seed)
    names = ["".join(rng.choices(string.ascii_uppercase, k=5)) for _ in range(hops + 1)]
    value = digits(rng)
    stmts = [f"VAR {names[0]} = {value}"] + [
        f"VAR {names[i + 1]} = VAR {names[i]}" for i in range(hops)
    ]
    depths = sorted(rng.random() for _ in stmts)
    filler = hay.fill(n_tokens - 12 * len(stmts), rng)
    history, n, d = _weave(filler, list(zip(depths, stmts, strict=True)), hay.encode)
    q = f"Which variables are assigned the value {value}, directly or through other variables?"
    return Task("variable_tracking", history, q, names, n, d, seed)


WORDS = (
    "apple river candle mirror garden silver thunder velvet harbor lantern meadow pepper "
    "saddle timber violet walnut anchor basket copper falcon glacier hammer island jacket kettle "
    "ladder marble needle orchard pillow quiver rocket shadow tunnel umbrella valley window"
).split()


def common_words(encode: Encode, n_tokens: int, seed: int, *, top: int = 5) -> Task:
    """A long numbered word list in which a few words recur often (RULER cwe)."""
    rng = random.Random(seed)
    common = rng.sample(WORDS, top)
    rare = [w for w in WORDS if w not in common]
    lines, total, i = [], 0, 0
    while total < n_tokens:
        word = rng.choice(common) if rng.random() < 0.3 else rng.choice(rare)
        line = f"{i + 1}. {word}"
        lines.append(line)
        total += len(encode(line + "\n"))
        i += 1
    history = "\n".join(lines) + "\n"
    q = f"What are the {top} most common words in the list above?"
    return Task("common_words", history, q, common, len(encode(history)), [], seed)


_PEOPLE = ["Mary", "John", "Sandra", "Daniel", "Alice", "Omar", "Priya", "Chen", "Fatima", "Lars"]
_PLACES = [
    "kitchen", "garden", "office", "bathroom", "hallway", "bedroom", "garage", "library",
    "cellar", "balcony",
]  # fmt: skip
_VERBS = ["moved to", "went to", "travelled to", "walked to", "journeyed to"]


def world(hay: Haystack, n_tokens: int, seed: int, *, people: int = 4, moves: int = 12) -> Task:
    """BABILong-style: people move between places, facts scattered in long text."""
    rng = random.Random(seed)
    who = rng.sample(_PEOPLE, people)
    where: dict[str, str] = {}
    facts = []
    for _ in range(moves):
        p = rng.choice(who)
        place = rng.choice([x for x in _PLACES if x != where.get(p)])
        where[p] = place
        facts.append(f"{p} {rng.choice(_VERBS)} the {place}.")
    depths = sorted(rng.random() for _ in facts)
    filler = hay.fill(n_tokens - 10 * moves, rng)
    history, n, d = _weave(filler, list(zip(depths, facts, strict=True)), hay.encode)
    person = rng.choice(sorted(where))
    last_depth = max(dd for dd, f in zip(depths, facts, strict=True) if f.startswith(person + " "))
    meta = {"person": person, "last_fact_depth": last_depth}
    return Task("world", history, f"Where is {person}?", [where[person]], n, d, seed, meta)


GENERATORS = {
    "passkey": lambda hay, n, seed: passkey(hay, n, depth=random.Random(seed).random(), seed=seed),
    "multikey": lambda hay, n, seed: multikey(hay, n, seed),
    "multivalue": lambda hay, n, seed: multivalue(hay, n, seed),
    "variable_tracking": lambda hay, n, seed: variable_tracking(hay, n, seed),
    "common_words": lambda hay, n, seed: common_words(hay.encode, n, seed),
    "world": lambda hay, n, seed: world(hay, n, seed),
}
