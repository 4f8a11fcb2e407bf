"""Fixtures for the model tests: the tiny model and a small synthetic corpus (no machine files)."""

import random

import pytest
import torch

torch.set_num_threads(1)


def _toy_text(rng: random.Random, n_chars: int) -> str:
    words = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta", "zeta", "iota"]
    names = [f"key{rng.randrange(1000):03d}" for _ in range(20)]
    out = []
    while sum(len(s) for s in out) < n_chars:
        k = rng.choice(names)
        out.append(f"{k} = {rng.choice(words)} {rng.randrange(100)}; recall {k}.\n")
    return "".join(out)


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory):
    from mcmodels.corpus import corpus_from_texts

    rng = random.Random(0)
    texts = [(f"toy/doc{i:03d}", _toy_text(rng, 6000)) for i in range(60)]
    return corpus_from_texts(tmp_path_factory.mktemp("corpus"), texts)
