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

    def __init__(
        self, message: str, *, window_needed: int | None = None, question: int | None = None
    ):
        super().__init__(message)
        self.window_needed = window_needed  # the smallest window that would do, if known
        self.question = question  # the question's length in tokens, when it is the cause


class StaleGists(SessionError):
    """The tree's gists were computed by another GistNet than the session's."""

    def __init__(self, message: str, *, url: str):
        super().__init__(message)
        self.url = url


class ContextError(SessionError, ValueError):
    """An edit that would break an invariant of the working context, or a budget it cannot meet."""


class PathTaken(SessionError):
    """A tree cannot be created where something else is: a file, or a folder of other files."""

    exit_code = 4  # as for a tree that already exists there: pick another path

    def __init__(self, message: str, *, entries: int | None = None):
        super().__init__(message)
        self.entries = entries  # what the folder holds (None: the path is a file)
