"""The reader stage: what a text reader is shown, and how recalled passages are chosen for it.

A text reader (``mcmodels.readers``) never sees the keeper's working context (gists mean nothing
to another model); it gets the recalled passages, the raw recent tail and the question as text
in its own chat template. So what it is shown must be precise:

* **Whole sentences are scored.** A hit is a 32-token block, and a fact's sentence often
  straddles two blocks, so the block's BM25 score undersells it. Each candidate passage (the hit
  block with its neighbours, within its segment) is cut into sentences and scored by its best
  window of up to two sentences against the question's words (idf-weighted, as the index does).
* **Near-duplicates that lack what is asked go.** Facts of one form ("the code of the red door is
  …", "the code of the blue door is …") all match most of a question; only the one holding the
  question's distinguishing (rarest) words answers it. A passage whose best window scores below
  ``keep_ratio`` of the best passage's is dropped rather than shown as a plausible distractor.
* **Evidence, not echoes.** The model's own earlier answers are shown only when nothing the
  user or a document said matches (then labelled as its own words): a 1.5B reader shown both
  its earlier wrong answer and the user's statement copied the wrong one.
* **Other words, found.** When the question's words find nothing, the reader rewords it as the
  statement a document would make and the index is asked again (``expansion_messages``).
* **Nothing found is said.** With no passage, the prompt says the memory holds nothing that
  matches, and the instruction asks the reader to say so instead of guessing.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from mcruntime.attribution import Misattributed
from mcruntime.recall import ASSISTANT_SAID, USER_SAID
from mcruntime.render import ASSISTANT, USER

# Chosen on LoCoMo's dev split with the evidence turns handed to the reader (docs/memory.md):
# "in a few words" (answers were sentences around the fact), the rule for relative dates (with
# mcruntime.dates' brackets: temporal F1 0.14 -> 0.87), "plainly imply" and a refusal only as
# the last resort (it refused a third of the questions whose evidence it held), and "who did
# what" (questions that name the wrong person); 95 questions: F1 0.42 -> 0.53.
SYSTEM = (
    "You are a memory assistant. You know only what is written in the notes that the user's "
    "memory recalled below (passages of documents the user gave you and of your earlier "
    "conversations); you know nothing else about the user or their documents. Answer in a few "
    "words from the notes, quoting names, numbers, versions and other exact words exactly as "
    "they are written. The user's own words are evidence; your own earlier answers are not. "
    'A note may say when it was written: read "yesterday", "last week" or "next month" in it '
    "from that date and answer with the date they mean (a note of 8 May 2023 saying "
    '"yesterday" means 7 May 2023). Answer from what the notes say or plainly imply, even '
    "when no note says it in the question's words. Only when no note is about what is asked, "
    'say: "My memory holds nothing about that." Check who did what: when the notes tell it of '
    "someone other than the person asked about, it is not about them."
)
TOLD = (
    "You are a memory assistant. The user is telling you something, not asking: it is now "
    "stored in your memory. Acknowledge it in one short sentence, repeating its key facts "
    "exactly (names, numbers); do not ask questions back."
)
_ASKS = re.compile(
    r"^\s*(what|who|whom|whose|when|where|which|why|how|is|are|was|were|do|does|did|can|could|"
    r"should|would|will|shall|may|have|has|had|tell|list|name|give|show|explain|summari[sz]e|"
    r"describe|find|remind|recall)\b",
    re.I,
)


def asks(message: str) -> bool:
    """Whether a message asks for something (a question or a request), rather than telling:
    "my locker number is 4417" must be acknowledged, not answered with "nothing found"."""
    return message.rstrip().endswith("?") or bool(_ASKS.match(message))


NOTHING = "(nothing in memory matches this question)"
EXPAND = (
    "A user asks a question about their notes. List ten other words a note that answers it "
    "would likely use instead of the question's words: synonyms and related words for what "
    "is asked (for example, for 'Where does Ann reside?': lives, home, address, house, "
    "town). Reply with the words only, separated by commas."
)
_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass
class Passage:
    """A recalled span of the tree as text, with who said it."""

    start: int
    stop: int
    score: float  # retrieval score of its best hit
    source: str
    text: str
    kind: str = "document"  # document, user, assistant
    weight: float = 0.0  # best sentence window's match with the question
    via: str = "words"  # found by the question's words, or by meaning keys alone
    when: str = ""  # when it was said, in words ("at the start of your conversation")
    replies_to: str = ""  # a chat turn's predecessor: matched with it
    # where ``replies_to`` starts when it ends where this passage starts: then a passage whose
    # match needs its words is shown with it ("What days do you go?" is about the gym)
    replies_from: int | None = None

    def report(self) -> dict:
        return {
            "start": self.start,
            "stop": self.stop,
            "score": round(float(self.score), 3),
            "source": self.source,
            "match": round(float(self.weight), 3),
            "via": self.via,
        }


@dataclass
class Reading:
    """What a text reader is shown for one question (``Session.read_prompt``)."""

    prompt: list[dict]  # the chat: instruction, passages, recent conversation, question
    hits: list  # the index's hits the passages came from
    passages: list[Passage]  # chosen, in the order shown
    recent: list[tuple[int, int]]  # the chat turns shown as the recent conversation (tokens)
    reworded: str | None = None  # the reader's rewording, when the question's words found nothing
    # the question names one speaker and only another's words answer it (answered without the
    # reader: mcruntime.attribution)
    misattributed: Misattributed | None = None


def sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Each sentence's (start, stop) in ``text``, surrounding white space left out."""
    out, pos = [], 0
    for cut in [*_SENT.finditer(text), None]:
        a, b = pos, cut.start() if cut else len(text)
        piece = text[a:b]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            out.append((a + lead, a + len(piece.rstrip())))
        pos = cut.end() if cut else len(text)
    return out


def cut_to(p: Passage, room: int, weigh, count, width: int = 2) -> Passage | None:
    """``p`` cut to the whole sentences around its best window that fit in ``room`` tokens
    (``count`` tells a text's tokens), or None when no matching window fits. A long passage
    merged from neighbouring hits used to be dropped whole when it did not fit what was left
    of the budget, though its best two sentences would have: a reader then answered from
    weaker passages, or invented (the hand trial in docs/memory.md)."""
    spans = sentence_spans(p.text)
    if len(spans) < 2:
        return None
    n = [count(p.text[a:b]) for a, b in spans]
    best, lo, hi = 0.0, 0, 0
    for i in range(len(spans)):
        for w in range(1, width + 1):
            if i + w <= len(spans) and sum(n[i : i + w]) <= room:
                got = weigh(p.text[spans[i][0] : spans[i + w - 1][1]])
                if got > best:
                    best, lo, hi = got, i, i + w
    if best <= 0:
        return None
    used = sum(n[lo:hi])
    while True:  # neighbours while they fit: the sentence after a fact often completes it
        if hi < len(spans) and used + n[hi] <= room:
            used, hi = used + n[hi], hi + 1
        elif lo > 0 and used + n[lo - 1] <= room:
            used, lo = used + n[lo - 1], lo - 1
        else:
            break
    a, b = spans[lo][0], spans[hi - 1][1]
    start = min(p.stop, p.start + count(p.text[:a]))
    stop = max(start, min(p.stop, start + used))
    return dataclasses.replace(p, start=start, stop=stop, text=p.text[a:b])


def best_window(text: str, weigh, width: int = 2) -> float:
    """The best match weight over windows of up to ``width`` consecutive sentences."""
    ss = sentences(text) or [text]
    best = 0.0
    for i in range(len(ss)):
        for w in range(1, width + 1):
            if i + w <= len(ss):
                best = max(best, weigh(" ".join(ss[i : i + w])))
    return best


def choose(
    passages: list[Passage],
    weigh,
    k: int,
    keep_ratio: float,
    budget: int | None = None,
    count=None,
) -> list[Passage]:
    """The ``k`` passages whose best sentence window matches the question best, dropping
    those below ``keep_ratio`` of the best; then the passages found by meaning alone (which
    need not share the question's words), in their hit order, in what room is left: taken in
    turn with the word passages, they held 41% of the tokens shown and 12% of the evidence
    turns found on LoCoMo dev, and after them a paraphrase whose words match nothing still
    finds its passage (the memory bench's dev probes, 16k and 64k tokens); with ``budget``,
    only as many as fit in that many tokens (the best always), so a reader is shown about as
    much text whether the passages are short chat turns or long stretches of a document;
    the fill ends at the first passage that does not fit, cut to its best sentences that fit
    what is left when ``count`` (a text's tokens) is given (``cut_to``); returned weakest first
    (best right before the question); the model's own earlier answers only when nothing else
    matches. A passage lying inside another chosen one (a turn also shown before the reply
    that answers it) is shown once, inside the longer one."""
    for p in passages:
        p.weight = best_window(p.text, weigh)
        if p.replies_to:  # a reply answers in the words of what it replies to
            joint = weigh(f"{p.replies_to} {p.text}")
            p.weight = max(p.weight, joint)
            if p.replies_from is not None and joint > weigh(p.text):
                p.text, p.start = p.replies_to + p.text, p.replies_from
    ranked = sorted(
        (p for p in passages if p.via != "meaning"), key=lambda p: (-p.weight, -p.score)
    )
    if ranked and ranked[0].weight > 0:
        top = ranked[0].weight
        ranked = [p for p in ranked if p.weight >= keep_ratio * top]
    ranked += [p for p in passages if p.via == "meaning"]
    if any(p.kind != "assistant" for p in ranked):  # own answers only when nothing else
        ranked = [p for p in ranked if p.kind != "assistant"]
    chosen, used = [], 0
    for p in ranked[:k]:
        if any(q.start <= p.start and p.stop <= q.stop for q in chosen):
            continue  # already shown inside a better passage (a reply shown with its turn)
        inside = [q for q in chosen if p.start <= q.start and q.stop <= p.stop]
        chosen = [q for q in chosen if q not in inside]  # shown again inside this one
        used -= sum(q.stop - q.start for q in inside)
        if chosen and budget is not None and used + (p.stop - p.start) > budget:
            cut = cut_to(p, budget - used, weigh, count) if count is not None else None
            if cut is not None:
                chosen.append(cut)
            break
        chosen.append(p)
        used += p.stop - p.start
    order = {id(p): i for i, p in enumerate(chosen)}
    return sorted(chosen, key=lambda p: (p.kind != "assistant", -order[id(p)]))


def turn_text(text: str) -> str:
    """Stored chat turns ("User: …") read with the speaker in words."""
    lines = text.split("\n")
    for role, said in ((USER, USER_SAID), (ASSISTANT, ASSISTANT_SAID)):
        lines = [said + ln[len(role) :] if ln.startswith(role) else ln for ln in lines]
    return "\n".join(lines)


def when_said(turn: int, turns: int, day: str = "") -> str:
    """Where in the conversation a chat turn lies (``turn`` of ``turns``, from 0), in words a
    reader can match to "in my first message", "at the start", "recently": the notes are
    ordered by match, not by time, so without it a reader took the first note for the first
    message and found no answer there. ``day``: the turn's date where it is not today's."""
    f = turn / max(1, turns)
    if turn == 0:
        where = "in the first message of your conversation"
    elif f < 0.05:
        where = f"at the start of your conversation (message {turn + 1} of {turns})"
    elif f > 0.9:
        where = f"recently (message {turn + 1} of {turns})"
    else:
        where = f"earlier in your conversation (message {turn + 1} of {turns})"
    return f"{where}, on {day}" if day else where


def _label(p: Passage, i: int) -> str:
    when = p.when or "earlier"
    if p.kind == "assistant":
        return f"[{i}] your own answer {when} (not evidence)"
    if p.kind == "user":
        return f"[{i}] the user (who is asking you now) said {when}"
    return f"[{i}] from {p.source}"


def messages(question: str, passages: list[Passage], recent: str = "") -> list[dict]:
    """The reader's chat: a fixed system instruction (cached by the reader across turns), then
    the notes (weakest first), the recent conversation and the question."""
    if passages:
        notes = "\n\n".join(f"{_label(p, i)}:\n{p.text.strip()}" for i, p in enumerate(passages, 1))
    else:
        notes = NOTHING
    parts = [f"Notes from memory:\n\n{notes}"]
    if recent.strip():
        parts.append(f"Most recent part of the memory:\n{recent.strip()}")
    if not asks(question):
        return [
            {"role": "system", "content": TOLD},
            {"role": "user", "content": question.strip()},
        ]
    parts.append(f"Question: {question.strip()}")
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def expansion_messages(question: str) -> list[dict]:
    """Ask a reader for the words a passage answering ``question`` would use: BM25 finds no
    passage for a question that shares no word with the fact ("Which animal lives with X?"
    against "X keeps a pet ferret at home"); the reader's own rewording often does. Run only
    when the question's own words find nothing, so it costs a short generation at question
    time, never anything at ingest."""
    return [
        {"role": "system", "content": EXPAND},
        {"role": "user", "content": question.strip()},
    ]
