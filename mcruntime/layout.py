"""Where the memory sits in the chat template.

The model's sequence is ``prefix + [working context] + before_user + question + after_user``.
The memory goes inside the user turn, after a short instruction, and the question follows it
with a label; the best retrieval hits are read back raw between the two (the recall
section), so the text the answer needs sits right before the question. On held-out *dev* text (never the test split) SmolLM2-135M answered planted-fact
questions from 1.6k tokens of raw context 72% of the time this way, against 50% with the memory
in the system turn (probe recorded in bench/results/layout_probe.json).
"""

from __future__ import annotations

from mcmodels import ChatParts

INSTRUCTION = "Read the text and answer the question at the end."
QUESTION = "\n\nQuestion: "
AFTER_QUESTION = " Answer briefly."
RECALL_HEAD = "\n\nPassages from memory that may answer it:\n"
RECALL_SEP = "\n[...]\n"
_MARK = "\ue000MCMEM\ue000"


def recall_ids(tokenizer, passages: list[list[int]]) -> list[int]:
    """The recall section: raw passages (token ids, weakest first) under a short heading,
    placed between the working context and the question."""
    if not passages:
        return []
    out = tokenizer.encode(RECALL_HEAD)
    for k, p in enumerate(passages):
        out += (tokenizer.encode(RECALL_SEP) if k else []) + list(p)
    return out


def chat_layout(tokenizer, instruction: str | None = None) -> ChatParts:
    rendered = tokenizer.render_chat(
        [{"role": "user", "content": _MARK}], add_generation_prompt=True
    )
    head, tail = rendered.split(_MARK, 1)
    instruction = INSTRUCTION if instruction is None else instruction
    return ChatParts(
        prefix=tokenizer.encode(head, special=True)
        + tokenizer.encode(f"{instruction}\n\n" if instruction else ""),
        before_user=tokenizer.encode(QUESTION),
        after_user=tokenizer.encode(AFTER_QUESTION) + tokenizer.encode(tail, special=True),
        end_ids=sorted(tokenizer.end_ids),
    )
