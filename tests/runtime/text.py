"""Filler prose for the runtime tests: sentences of a dozen words, one generator per seed."""

import random

WORDS = "river stone cloud amber quiet ledger violet harbor copper lantern meadow tundra".split()


def prose(n_words: int, seed: int) -> str:
    rng = random.Random(seed)
    sents = []
    while n_words > 0:
        k = rng.randint(5, 12)
        sents.append(" ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + ".")
        n_words -= k
    return " ".join(sents)
