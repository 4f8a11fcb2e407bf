"""Fixtures of the end-to-end tests of `mc` (helpers in tests/cli/helpers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.cli.helpers import TINY, run_mc, write_docs

# the moto S3 server of the store tests (importing it also sets dummy AWS variables)
from tests.store.conftest import moto_server  # noqa: F401


@pytest.fixture
def docs(tmp_path) -> Path:
    return write_docs(tmp_path / "docs")


@pytest.fixture(scope="session")
def base_tree(tmp_path_factory) -> str:
    """A tree of the tiny model holding the docs folder, built once; copy it with `tree`."""
    root = tmp_path_factory.mktemp("base")
    docs = write_docs(root / "docs")
    url = str(root / "base.mc")
    r = run_mc(["ingest", url, docs, *TINY])
    assert r.code == 0, r.err
    return url


@pytest.fixture
def tree(base_tree, tmp_path) -> str:
    """A private copy of ``base_tree`` (a local tree is a folder)."""
    dst = tmp_path / "notes.mc"
    shutil.copytree(base_tree, dst)
    return str(dst)
