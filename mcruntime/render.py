"""How text enters the tree: documents under a source heading, chat turns with their role.

The recall section (``mcruntime.recall``) reads chat turns back with the roles in words, so it
relies on these labels.
"""

from __future__ import annotations

from enum import StrEnum

USER, ASSISTANT = "User: ", "Assistant: "
CHAT = "chat:"  # the source prefix of every chat turn


class Role(StrEnum):
    """Who a segment's text is from; a chat turn's source is ``chat:<role>``."""

    DOCUMENT = "document"
    USER = "user"
    ASSISTANT = "assistant"

    @property
    def source(self) -> str:
        return f"{CHAT}{self.value}"


USER_SOURCE, ASSISTANT_SOURCE = Role.USER.source, Role.ASSISTANT.source
LABELS = {Role.USER: USER, Role.ASSISTANT: ASSISTANT}  # how a turn's text is stored


def role_of(source: str) -> Role:
    """The role of a segment by its source name (anything else is a document)."""
    return {USER_SOURCE: Role.USER, ASSISTANT_SOURCE: Role.ASSISTANT}.get(source, Role.DOCUMENT)


def is_chat(source: str) -> bool:
    return source.startswith(CHAT)


def render_document(text: str, source: str) -> str:
    return f"### {source}\n{text.rstrip()}\n\n"


def render_turn(role: str, text: str) -> str:
    """A user turn ends its line; an assistant turn ends its paragraph."""
    if role == "user":
        return f"{USER}{text.strip()}\n"
    return f"{ASSISTANT}{text.strip()}\n\n"
