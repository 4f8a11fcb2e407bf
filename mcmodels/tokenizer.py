"""Tokenizers behind one small protocol: encode/decode, special ids, chat template, binding hash.

Two implementations: :class:`HFTokenizer` wraps a Hugging Face tokenizer (the default model's) and
:class:`ByteTokenizer` is a byte-level tokenizer for the tiny test model.

The chat template is exposed in two ways. ``chat_ids(messages)`` applies it to whole messages.
``chat_parts(system=None)`` cuts it into the pieces the runtime wraps around its working context::

    parts.prefix + [working-context entries] + parts.before_user + encode(question)
        + parts.after_user            # ends with the assistant prefix, generation starts here

The memory sits inside the system turn, after the system text. The pieces are found by rendering
the real template with marker strings, so any template with a system role works.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

_SYS = "\ue000MCSYS\ue000"
_USR = "\ue000MCUSR\ue000"


@dataclass(frozen=True)
class ChatParts:
    """Token-id pieces of the chat template around the working context (see module doc)."""

    prefix: list[int]
    before_user: list[int]
    after_user: list[int]
    end_ids: list[int] = field(default_factory=list)  # ids that end an assistant turn


class _ChatMixin:
    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:  # pragma: no cover
        raise NotImplementedError

    def encode(self, text: str, *, special: bool = False) -> list[int]:  # pragma: no cover
        raise NotImplementedError

    def chat_ids(self, messages, add_generation_prompt: bool = True) -> list[int]:
        """Apply the chat template to ``[{"role": ..., "content": ...}, ...]``."""
        return self.encode(self.render_chat(messages, add_generation_prompt), special=True)

    def chat_parts(self, system: str | None = None) -> ChatParts:
        """Cut the template into the pieces around the memory (see the module doc).

        ``system`` is the system text placed before the memory; None uses the template's default
        system text when it has one (SmolLM2's "You are a helpful AI assistant named SmolLM ...").
        """
        default_sys = self.default_system_text() if system is None else system
        msgs = [{"role": "system", "content": _SYS}, {"role": "user", "content": _USR}]
        with_gen = self.render_chat(msgs, add_generation_prompt=True)
        head, rest = with_gen.split(_SYS, 1)
        middle, tail = rest.split(_USR, 1)
        sep = "\n" if default_sys else ""
        return ChatParts(
            prefix=self.encode(head + default_sys + sep, special=True),
            before_user=self.encode(middle, special=True),
            after_user=self.encode(tail, special=True),
            end_ids=sorted(self.end_ids),
        )

    def default_system_text(self) -> str:
        """The system text the template inserts when a conversation has none ('' if none)."""
        plain = self.render_chat([{"role": "user", "content": _USR}], add_generation_prompt=False)
        with_sys = self.render_chat(
            [{"role": "system", "content": _SYS}, {"role": "user", "content": _USR}],
            add_generation_prompt=False,
        )
        head, rest = with_sys.split(_SYS, 1)
        after_sys = rest.split(_USR, 1)[0]
        if plain.startswith(head):
            cut = plain[len(head) :]
            idx = cut.find(after_sys) if after_sys else -1
            if idx > 0:
                return cut[:idx]
        return ""


class HFTokenizer(_ChatMixin):
    """A Hugging Face tokenizer. Special-token strings in text map to their ids; no BOS is added."""

    def __init__(self, hf, name: str):
        self.hf = hf
        self.name = name
        self.eos_id: int = (
            hf.convert_tokens_to_ids("<|im_end|>")
            if "<|im_end|>" in hf.get_vocab()
            else hf.eos_token_id
        )
        self.bos_id: int | None = hf.bos_token_id
        self.pad_id: int = hf.pad_token_id if hf.pad_token_id is not None else self.eos_id
        self.special_ids: set[int] = set(hf.all_special_ids)
        ends = {self.eos_id}
        if hf.eos_token_id is not None:
            ends.add(hf.eos_token_id)
        eot = (
            hf.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in hf.get_vocab() else None
        )
        if eot is not None:
            ends.add(eot)
        self.end_ids: set[int] = ends
        # a document separator: used as the "neutral" position in evaluation
        self.sep_id: int = eot if eot is not None else self.eos_id
        self.vocab_size = len(hf)

    def encode(self, text: str, *, special: bool = False) -> list[int]:
        """Text -> ids. Special-token strings in ``text`` are plain text unless ``special``:
        a document or question containing "<|im_end|>" must not end a turn (template pieces
        pass ``special=True``)."""
        return list(
            self.hf.encode(text, add_special_tokens=False, split_special_tokens=not special)
        )

    def decode(self, ids, skip_special: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special)

    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:
        return self.hf.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def binding_hash(self) -> str:
        """sha256 of the vocabulary and merges (canonical JSON), independent of file layout."""
        backend = getattr(self.hf, "backend_tokenizer", None)  # fast (Rust) tokenizers
        if backend is not None:
            model = json.loads(backend.to_str()).get("model", {})
            payload = {"vocab": model.get("vocab"), "merges": model.get("merges")}
        else:  # slow tokenizer
            payload = {"vocab": self.hf.get_vocab(), "merges": None}
        payload["added"] = sorted((t, i) for t, i in self.hf.get_added_vocab().items())
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()


class ByteTokenizer(_ChatMixin):
    """Bytes 0..255 are ids 0..255; then <|bos|> <|eos|> <|pad|> <|im_start|> <|im_end|>.

    Chat template (ChatML-like)::

        <|im_start|>{role}\\n{content}<|im_end|>\\n ...   then <|im_start|>assistant\\n
    """

    SPECIALS = ("<|bos|>", "<|eos|>", "<|pad|>", "<|im_start|>", "<|im_end|>")

    def __init__(self):
        self.name = "byte-tokenizer"
        self._special = {s: 256 + i for i, s in enumerate(self.SPECIALS)}
        self._special_by_id = {v: k for k, v in self._special.items()}
        self.bos_id: int | None = self._special["<|bos|>"]
        self.eos_id: int = self._special["<|im_end|>"]
        self.pad_id: int = self._special["<|pad|>"]
        self.sep_id: int = self._special["<|eos|>"]
        self.special_ids: set[int] = set(self._special.values())
        self.end_ids: set[int] = {self._special["<|eos|>"], self._special["<|im_end|>"]}
        self.vocab_size = 256 + len(self.SPECIALS)

    def encode(self, text: str, *, special: bool = False) -> list[int]:
        if not special:
            return list(text.encode("utf-8"))
        out: list[int] = []
        i = 0
        while i < len(text):
            if text[i] == "<":
                hit = next((s for s in self.SPECIALS if text.startswith(s, i)), None)
                if hit is not None:
                    out.append(self._special[hit])
                    i += len(hit)
                    continue
            j = text.find("<", i + 1)
            j = len(text) if j < 0 else j
            out.extend(text[i:j].encode("utf-8"))
            i = j
        return out

    def decode(self, ids, skip_special: bool = False) -> str:
        buf = bytearray()
        parts: list[str] = []
        for t in ids:
            t = int(t)
            if t < 256:
                buf.append(t)
                continue
            parts.append(buf.decode("utf-8", errors="replace"))
            buf = bytearray()
            if not skip_special:
                parts.append(self._special_by_id.get(t, ""))
        parts.append(buf.decode("utf-8", errors="replace"))
        return "".join(parts)

    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:
        s = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        if add_generation_prompt:
            s += "<|im_start|>assistant\n"
        return s

    def binding_hash(self) -> str:
        return hashlib.sha256(("bytes256:" + ",".join(self.SPECIALS)).encode()).hexdigest()
