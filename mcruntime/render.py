"""How text enters the tree: documents under a source heading, chat turns with their role.

The recall section (``mcruntime.recall``) reads chat turns back with the roles in words, so it
relies on these labels.
"""

from __future__ import annotations

USER, ASSISTANT = "User: ", "Assistant: "


def render_document(text: str, source: str) -> str:
    return f"### {source}\n{text.rstrip()}\n\n"


def render_turn(role: str, text: str) -> str:
    """A user turn ends its line; an assistant turn ends its paragraph."""
    if role == "user":
        return f"{USER}{text.strip()}\n"
    return f"{ASSISTANT}{text.strip()}\n\n"
