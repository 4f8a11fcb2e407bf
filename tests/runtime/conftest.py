"""The runtime tests' tiny model and its random GistNet (modules that need other weights, e.g.
another seed, define their own ``base``)."""

import pytest
import torch

import mcmodels


@pytest.fixture(scope="module")
def base(tiny):
    return tiny


@pytest.fixture(scope="module")
def gistnet(base):
    torch.manual_seed(0)
    return mcmodels.GistNet.for_base(base).eval()
