"""Errors a person can act on. `cli.main` prints them as one line and exits with `exit_code`."""

from __future__ import annotations


class ModelError(Exception):
    """Base class of every error mcmodels raises on purpose."""

    exit_code = 1


class ModelNotFoundError(ModelError):
    """A base model name or path that cannot be resolved offline."""

    exit_code = 21


class PositionError(ModelError):
    """A position id outside the base model's trained range (e.g. ≥ 8192 for SmolLM2)."""

    exit_code = 22


class CheckpointError(ModelError):
    """A missing, corrupt or mismatched GistNet/LensNet checkpoint."""

    exit_code = 23


class CorpusError(ModelError):
    """No usable training/evaluation text."""

    exit_code = 24
