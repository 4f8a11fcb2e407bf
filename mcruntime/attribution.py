"""Who said it: a question about one person that only another person's words answer.

A memory of a conversation between named people (chat segments whose source is
``chat:<name>``: a group chat, meeting notes, LoCoMo) is asked about one of them: "What did
Caroline realize after her charity race?" when it was Melanie who ran the race. The recalled
turns match the question's words well, and a text reader answers from them: the 1.5B reader
answered every such question of LoCoMo's dev split (0 of 28 said the conversation does not
tell), though its instruction asks it to check who did what. Told plainly, a user is better
served: the memory holds nothing about that of Caroline, and what it holds is Melanie's.

The check is lexical and deliberately narrow. It looks at the turns a reader is about to be
shown, each weighed by its match with the question's words (the index's idf sum, as passages
are chosen). It speaks only when the question names exactly one of the memory's speakers, and
no turn that this person said or that names them matches even ``RATIO`` of what the best turn
matches; a reply to a question is weighed with the question (the asker's words are the
question's, the answer is the reply's). On LoCoMo's dev conversations (302 questions with
evidence) it speaks for 10 of the 71 adversarial questions and for none of the 231 others
(at a share of 0.6 it also spoke for 4 single-hop questions, so 0.5 it is). On the eight test
conversations, measured once without answering: 40 of 375 adversarial questions, and 9 of
1,305 others (most of them questions whose answer the other speaker holds, "Who invited Nate
…?", or that call a speaker by a short name the check does not know).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mcruntime.render import CHAT

RATIO = 0.5  # the named person's best turn matches less than this share of the best turn
ROLES = ("user", "assistant")  # a chat with the assistant: its speakers are roles, not people
QUOTE_CHARS = 240  # of the other speaker's turn, quoted in the answer


@dataclass
class Said:
    """One chat turn (or piece of a document: ``speaker`` None) a reader would be shown: who
    said it, its text, its match."""

    speaker: str | None
    text: str
    weight: float


@dataclass
class Misattributed:
    """The question asks about ``person``; only ``speaker``'s words (``text``) match it."""

    person: str
    speaker: str
    text: str

    def answer(self) -> str:
        quote = " ".join(self.text.split())
        if len(quote) > QUOTE_CHARS:
            quote = quote[: QUOTE_CHARS - 1].rstrip() + "…"
        return (
            f"My memory holds nothing about that for {self.person}. "
            f'The nearest it holds was said by {self.speaker}: "{quote}"'
        )


def speaker_of(source: str) -> str | None:
    """The person a chat segment's source names (``chat:Melanie``), None for documents and
    for the roles of a chat with the assistant."""
    if not source.startswith(CHAT):
        return None
    name = source[len(CHAT) :].strip()
    return name if name and name.lower() not in ROLES else None


def named(question: str, speakers: set[str]) -> list[str]:
    """The speakers ``question`` names, as whole words, in their spelling."""
    return sorted(s for s in speakers if re.search(rf"\b{re.escape(s)}\b", question))


def weigh_turns(turns: list[tuple[str | None, str]], weigh) -> list[Said]:
    """:class:`Said` for the consecutive turns ``(speaker, text)`` of one passage, each
    weighed by ``weigh`` (its match with the question). A turn that answers a question (the
    turn before it ends with "?") is weighed with that question too: "How long are you
    planning to stay in Japan?" holds the words of "How long did Calvin plan to stay in
    Japan?", and Calvin's reply ("A few months") holds the answer."""
    out, before = [], ""
    for speaker, text in turns:
        w = weigh(text)
        if before.rstrip().endswith("?"):
            w = max(w, weigh(f"{before} {text}"))
        out.append(Said(speaker, text, w))
        before = text
    return out


def check(question: str, said: list[Said], speakers: set[str]) -> Misattributed | None:
    """A :class:`Misattributed` when the question names one speaker and nothing that speaker
    said or is named in matches the question nearly as well as another's turn (see module)."""
    people = named(question, speakers)
    if len(people) != 1 or not said:
        return None
    person = people[0]
    best = max(said, key=lambda s: s.weight)
    if best.weight <= 0 or best.speaker in (None, person):
        return None
    mention = re.compile(rf"\b{re.escape(person)}\b")
    own = [s.weight for s in said if s.speaker == person or mention.search(s.text)]
    if own and max(own) >= RATIO * best.weight:
        return None
    return Misattributed(person, best.speaker, best.text)
