"""Runtime errors a person can act on; the CLI prints them as one line (see cli.main)."""


class SessionError(Exception):
    """A session-level problem: window too small, stale gists, unreadable input, …"""

    exit_code = 1


class ContextError(SessionError, ValueError):
    """An edit that would break an invariant of the working context, or a budget it cannot meet."""
