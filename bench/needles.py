"""Needles in real text for the memory benchmark: a passkey, facts of one form, a chat.

Each instance is a history of token ids (paragraphs of held-out text encoded one by one, so
the exact token span of every planted sentence is known and "did the focus hold the fact?" can
be checked) and probes asked at its end:

* ``passkey``: one 5-digit key;
* ``facts``: four facts of the same form with different keys (people) and values, asked in the
  fact's own words, so the reader must pick the right one of four similar sentences;
* ``paraphrase``: another of those facts asked in words it does not share with the fact except
  the key (the person's name);
* ``oneform``: k (3 or 5) facts of one form that differ in one word ("the code of the *blue*
  locker is …"), one asked: the reader must be shown, and pick, the one with that word;
* ``chat``: facts a user states in the first turns of a long conversation, asked many turns and
  thousands of tokens later, after one of the assistant's own answers has stated a wrong value.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from bench.tasks import Haystack, digits

FIRST = """Marta Tomasz Ingrid Kofi Aurelio Sunniva Dariusz Oyelaran Hiroko Benedetta Casimir
Ludmila Evander Yevgenia Thaddeus Ottoline Rasmus Perpetua Leopold Zofia Anselm Mireille
Bartholomew Svetlana""".split()
LAST = """Lindqvist Okafor Brannigan Castellanos Vuorinen Achterberg Szymanska Delacroix Mwangi
Fairweather Halvorsen Quintero Abernathy Nakashima Oyelowo Pemberton Rautenberg Villanueva
Kowalczyk Thistlewood Zabala Marchetti Grimsdottir Ellsworth""".split()

# (kind, fact, question in the fact's words, paraphrase sharing only the key, values)
FAMILIES = [
    ("colour", "The favourite colour of {k} is {v}.", "What is the favourite colour of {k}?",
     "Which hue does {k} like best?",
     "turquoise crimson ochre lavender chartreuse magenta vermilion cobalt".split()),
    ("city", "{k} was born in the city of {v}.", "In which city was {k} born?",
     "What is the hometown of {k}?",
     "Valparaiso Tbilisi Trondheim Montevideo Ljubljana Gdansk Winnipeg Cartagena".split()),
    ("job", "{k} works as a {v}.", "What does {k} work as?", "What is the profession of {k}?",
     "locksmith cartographer beekeeper glassblower stenographer taxidermist luthier "
     "falconer".split()),
    ("pet", "{k} keeps a pet {v} at home.", "What pet does {k} keep at home?",
     "Which animal lives with {k}?",
     "tortoise ferret axolotl chinchilla iguana parakeet hedgehog salamander".split()),
]  # fmt: skip

CODENAMES = "BLUEHERON REDKESTREL GREYMARLIN GOLDFINCH IRONWOOD SILVERPIKE".split()


@dataclass
class Probe:
    task: str
    question: str
    answer: str
    span: tuple[int, int]  # token span of the sentence holding the answer
    context: str = ""  # the needle's text (the oracle reads it with its neighbours)


@dataclass
class Instance:
    ids: list[int]
    probes: list[Probe]
    segments: list[tuple[str, int, int]] = field(default_factory=list)  # (source, start, stop)


def _weave(hay: Haystack, n_tokens: int, needles: list[str], rng: random.Random):
    """Filler paragraphs to ``n_tokens`` with each needle between paragraphs at a random depth;
    returns ids and each needle's token span."""
    filler = hay.fill(max(0, n_tokens - 40 * len(needles)), rng)
    slots = sorted(rng.randrange(len(filler) + 1) for _ in needles)
    order = list(range(len(needles)))
    rng.shuffle(order)
    ids: list[int] = []
    spans: dict[int, tuple[int, int]] = {}
    j = 0
    for k in range(len(filler) + 1):
        while j < len(slots) and slots[j] == k:
            s = len(ids)
            ids += hay.encode(needles[order[j]] + "\n\n")
            spans[order[j]] = (s, len(ids))
            j += 1
        if k < len(filler):
            ids += hay.encode(filler[k][0] + "\n\n")
    return ids, [spans[i] for i in range(len(needles))]


def _names(rng: random.Random, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        if name not in out and all(name.split()[0] not in o for o in out):
            out.append(name)
    return out


def documents(hay: Haystack, n_tokens: int, seed: int) -> Instance:
    """A passkey and four same-form facts in held-out text; three probes."""
    rng = random.Random(seed)
    key = digits(rng)
    _kind, fact, direct, para, values = FAMILIES[seed % len(FAMILIES)]
    names = _names(rng, 4)
    vals = rng.sample(values, 4)
    facts = [fact.format(k=k, v=v) for k, v in zip(names, vals, strict=True)]
    passkey = f"The pass key is {key}. Remember it. {key} is the pass key."
    ids, spans = _weave(hay, n_tokens, [passkey, *facts], rng)
    probes = [
        Probe("passkey", "What is the pass key?", key, spans[0], passkey),
        Probe("facts", direct.format(k=names[0]), vals[0], spans[1], facts[0]),
        Probe("paraphrase", para.format(k=names[1]), vals[1], spans[2], facts[1]),
    ]
    return Instance(ids, probes)


def chat_turn(role: str, text: str) -> str:
    """A turn as the runtime's sessions write it."""
    from mcruntime.render import render_turn

    return render_turn(role, text)


def conversation(hay: Haystack, n_tokens: int, seed: int) -> Instance:
    """A long chat: the user states three facts in the first turns; one of the assistant's later
    answers gets one of them wrong; filler turns discuss held-out text; two facts are asked."""
    rng = random.Random(seed)
    code, wrong = rng.sample(CODENAMES, 2)
    locker = digits(rng, 4)
    sister = _names(rng, 1)[0].split()[0]
    facts = [
        (f"Please remember this: my project codename is {code}.",
         "What project codename did I tell you in my first message?", code),
        (f"Also note that my locker number is {locker}.",
         "What is my locker number? I mentioned it early on.", locker),
        (f"One more thing: my sister is called {sister}.",
         "What is my sister called? I told you at the start.", sister),
    ]  # fmt: skip
    asked = rng.sample(range(3), 2)
    ids: list[int] = []
    segs: list[tuple[str, int, int]] = []
    spans: dict[int, tuple[int, int]] = {}

    def say(role: str, text: str) -> tuple[int, int]:
        s = len(ids)
        ids.extend(hay.encode(chat_turn(role, text)))
        segs.append((f"chat:{role}", s, len(ids)))
        return s, len(ids)

    for k, (stmt, _, _) in enumerate(facts):
        spans[k] = say("user", stmt)
        say("assistant", "Noted, I will remember that.")
    wrong_at = n_tokens * rng.uniform(0.3, 0.7)
    said_wrong = False
    paras = hay.fill(n_tokens, rng)
    asks = ["Can you explain this passage?", "What does this part mean?", "Summarise this for me.",
            "Tell me more about it.", "Go on.", "And then?"]  # fmt: skip
    for text, _ in paras:
        if len(ids) >= n_tokens - 64:
            break
        say("user", rng.choice(asks))
        if not said_wrong and len(ids) >= wrong_at:
            say("assistant", f"By the way, I think your project codename is {wrong}.")
            said_wrong = True
        say("assistant", text)
    probes = [
        Probe("chat", facts[k][1], facts[k][2], spans[k], chat_turn("user", facts[k][0]))
        for k in asked
    ]
    return Instance(ids, probes, segs)


ONE_FORM = [
    ("The code of the {w} locker is {v}.", "What is the code of the {w} locker?"),
    ("The {w} door opens with the combination {v}.", "Which combination opens the {w} door?"),
    ("The safe in the {w} room has the number {v}.", "What number does the safe in the {w} room have?"),
]  # fmt: skip
ONE_FORM_WORDS = "red blue green yellow orange purple silver golden black white".split()


def oneform(hay: Haystack, n_tokens: int, seed: int) -> Instance:
    """k facts of one form differing in one word (k = 3 for even seeds, 5 for odd), woven at
    random depths; one of them is asked."""
    rng = random.Random(seed)
    k = 3 if seed % 2 == 0 else 5
    fact, question = ONE_FORM[seed % len(ONE_FORM)]
    ws = rng.sample(ONE_FORM_WORDS, k)
    vals = [digits(rng, 4) for _ in range(k)]
    facts = [fact.format(w=w, v=v) for w, v in zip(ws, vals, strict=True)]
    ids, spans = _weave(hay, n_tokens, facts, rng)
    i = rng.randrange(k)
    return Instance(ids, [Probe("oneform", question.format(w=ws[i]), vals[i], spans[i], facts[i])])
