"""Errors of the tree store. Each names the tree or object and says what to do.

Every class carries an ``exit_code`` that the ``mc`` command uses as its exit status.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises on purpose."""

    exit_code = 1


class InvalidArgument(StoreError, ValueError):
    exit_code = 2


class PurgeRefused(InvalidArgument):
    """A purge that would drop what the caller did not allow (tags) or break another tree
    (a fork that reads the old shards)."""


class TreeNotFound(StoreError):
    exit_code = 3


class TreeExists(StoreError):
    exit_code = 4


class CommitConflict(StoreError):
    exit_code = 5


class CorruptTree(StoreError):
    exit_code = 6


class BindingMismatch(StoreError):
    exit_code = 7


class StoreAccessError(StoreError):
    """Missing credentials, permission denied, unreachable endpoint."""

    exit_code = 8


class CommitUnknown(StoreAccessError):
    """The storage failed while a commit record was written and the record could not be read
    back: the commit may or may not have landed. ``version`` and ``nonce`` say which record
    would be ours; the handle that raised it recognises a repeat of the same change."""

    def __init__(self, message: str, *, version: int = 0, nonce: str = ""):
        super().__init__(message)
        self.version = version
        self.nonce = nonce


class ReadOnlyError(StoreError):
    exit_code = 9


class VersionNotFound(StoreError):
    """A version number or tag name that the tree does not have."""

    exit_code = 10


def damaged(url: str, key: str, what: str) -> CorruptTree:
    """The error for one damaged object: which, what is wrong, and the two ways out."""
    return CorruptTree(
        f"{url}: object {key} {what}; the tree is damaged there: restore that object from "
        "a copy, or open an earlier version (version=...) that does not use it"
    )
