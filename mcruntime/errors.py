"""Runtime errors a person can act on; the CLI prints them as one line (see cli.main)."""


class SessionError(Exception):
    """A session-level problem: window too small, stale gists, unreadable input, …"""

    exit_code = 1


class InputError(SessionError):
    """Input that cannot be remembered: empty, binary, not UTF-8, no such file, no text files."""

    exit_code = 11

    def __init__(self, message: str, kind: str = "input"):
        super().__init__(message)
        self.kind = kind  # "empty", "binary", "not UTF-8", "missing", …


class WindowError(SessionError):
    """The window is too small for the tree, or for the question and its answer."""

    exit_code = 12


class ContextError(SessionError, ValueError):
    """An edit that would break an invariant of the working context, or a budget it cannot meet."""
