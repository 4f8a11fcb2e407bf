"""Shared test setup: one compute thread so a busy neighbour does not stall the suite."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# the CLI's and server's default reader is the 1.5B one where installed; tests pin the keeper
# so they read the same on every machine (reader tests name their reader)
os.environ.setdefault("MC_READER", "keeper")


import pytest


@pytest.fixture(scope="session")
def tiny():
    """The tiny random test model (byte tokenizer), one per test run: every folder's model
    fixtures (``base`` in runtime/) are this one."""
    import torch

    import mcmodels

    torch.set_num_threads(1)
    return mcmodels.tiny_base(0)
