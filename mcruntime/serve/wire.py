"""The OpenAI wire format: request bodies as pydantic models, responses and errors as dicts.

Only what the chat completions API defines is produced; fields a client may send that do not
apply here (temperature, top_p, penalties, tools, …) are accepted and ignored, since the
runtime decodes greedily with its own stop guards (``mcmodels.decoding``).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
REMEMBERED = ("user", "assistant")  # the roles kept in memory; system prompts are not
TAG_CHARS = 256  # a document's tag; all tags and the source fit one segment (the store says)


class APIError(Exception):
    """An error the client gets as ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status, message, type, param, code,
        )  # fmt: skip

    def body(self) -> dict:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# -- requests ----------------------------------------------------------------------------------


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def check_unicode(self, index: int) -> None:
        """Refuse text that is not Unicode: JSON can spell a lone surrogate (``\\ud800``),
        which no UTF-8 holds, so no tokenizer can read it."""
        parts = [self.content] if isinstance(self.content, str) else self.content or []
        for j, part in enumerate(parts):
            text = part if isinstance(part, str) else part.text
            try:
                (text or "").encode("utf-8")
            except UnicodeEncodeError as e:
                where = f"messages.{index}.content" + ("" if isinstance(part, str) else f".{j}")
                raise APIError(
                    400,
                    f"{where}: a lone surrogate ({text[e.start]!r} at character {e.start}) is "
                    "not Unicode text; send the text as valid UTF-8",
                    param=where,
                    code="invalid_text",
                ) from None

    def text(self, index: int) -> str:
        """The message's text; parts other than text are refused, not silently dropped."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        out = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise APIError(
                    400,
                    f"messages[{index}]: content parts of type {part.type!r} are not supported; "
                    "send text",
                    param=f"messages.{index}.content",
                    code="unsupported_content",
                )
            out.append(part.text)
        return "".join(out)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1)
    user: str | None = None

    def turns(self) -> tuple[list[tuple[str, str]], str]:
        """(the earlier user/assistant turns, the question). The last message must be the
        user's: the answer is to it."""
        for i, m in enumerate(self.messages):
            m.check_unicode(i)
        *history, last = self.messages
        if last.role != "user":
            raise APIError(
                400,
                f"the last message must be the user's (it is {last.role!r}): MegaContext answers "
                "the user's question",
                param=f"messages.{len(self.messages) - 1}.role",
            )
        question = last.text(len(self.messages) - 1)
        if not question.strip():
            raise APIError(
                400, "the user's message is empty", param=f"messages.{len(history)}.content"
            )
        # empty answers count: the tree holds them too, and the turns must line up
        turns = [(m.role, m.text(i)) for i, m in enumerate(history) if m.role in REMEMBERED]
        return turns, question


class DocumentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)
    source: str = Field(default="api", min_length=1, max_length=512, pattern=r"^[^\x00-\x1f]+$")
    tags: list[
        Annotated[str, StringConstraints(max_length=TAG_CHARS, pattern=r"^[^\x00-\x1f]*$")]
    ] = Field(default_factory=list, max_length=64)


class ForgetRequest(BaseModel):
    """Exactly one of ``document``, ``source`` (a glob) or ``match`` (a text)."""

    model_config = ConfigDict(extra="forbid")
    document: int | None = Field(default=None, ge=0)
    source: str | None = Field(default=None, min_length=1, max_length=512)
    match: str | None = Field(default=None, min_length=1, max_length=4096)
    purge: bool = False
    drop_tags: bool = False

    def rule(self) -> dict:
        return {"document": self.document, "source": self.source, "match": self.match}


# -- responses ---------------------------------------------------------------------------------


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage(prompt: int, completion: int) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion(cid: str, model: str, text: str, finish: str, use: dict, memory: dict) -> dict:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": use,
        "system_fingerprint": None,
        "memory": memory,  # not in OpenAI's schema; clients ignore unknown fields
    }


def chunk(
    cid: str,
    model: str,
    created: int,
    delta: dict | None,
    finish: str | None = None,
    *,
    with_usage: bool = False,
    use: dict | None = None,
) -> dict:
    """One ``chat.completion.chunk``; ``delta=None`` is the usage chunk (no choices)."""
    out: dict = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage:
        out["usage"] = use  # null on every chunk but the last, as OpenAI sends it
    return out


def models_list(model_ids: list[str], created: int) -> dict:
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "megacontext"}
            for m in model_ids
        ],
    }
