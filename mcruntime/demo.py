"""The first-run demonstration: a long generated journal with facts far from the end.

The journal of a fictional research station is generated from templates with a fixed seed:
every entry differs (names, numbers, weather, work), so its blocks are not copies of each other,
and a few facts are planted early. The demo ingests it into a tree, then asks about a fact that
sits tens of thousands of tokens before the end: the model can only answer if focus brings that
span back in raw detail.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mcruntime.render import ASSISTANT_SOURCE, USER_SOURCE

_CREW = ["Ines", "Tomasz", "Akira", "Beatrix", "Kwame", "Lucia", "Ravi", "Sofia", "Henrik", "Mei"]
_WEATHER = [
    "a cold wind from the north", "thin fog until noon", "clear skies and a hard frost",
    "sleet that turned to snow", "a calm grey morning", "gusts strong enough to rattle the masts",
    "bright sun on the ice", "low cloud and drizzle",
]  # fmt: skip
_WORK = [
    "recalibrated the wind sensors on the east mast", "replaced a cracked solar panel",
    "logged ice cores from the lower shelf", "repaired the generator's fuel filter",
    "counted seals along the shore", "cleaned the optics of the cloud camera",
    "tested the backup radio", "sorted the sample freezer", "dug out the snow around hut B",
    "measured the snow depth at twelve stakes", "mended the fence by the weather station",
    "ran the weekly water-quality test", "rebuilt the sledge runners",
    "serviced the snowmobile engines", "catalogued lichen samples from the ridge",
]  # fmt: skip
_MEALS = ["lentil stew", "fried rice", "pancakes", "fish soup", "curry", "baked beans", "pasta"]
_MOODS = ["cheerful", "tired", "restless", "focused", "quiet", "homesick", "upbeat"]


@dataclass
class Fact:
    text: str
    question: str
    answer: str


def _facts(rng: random.Random) -> list[Fact]:
    code = str(rng.randint(1000, 9999))
    vessel = rng.choice(["Northern Lark", "Polar Wren", "Aurora Finch", "Ice Heron"])
    hut = rng.choice(["hut C", "the old boathouse", "the radio shack", "the north bunker"])
    return [
        Fact(
            f"Important: the padlock on the medical cabinet opens with the code {code}.",
            "What is the code of the padlock on the medical cabinet?",
            code,
        ),
        Fact(
            f"The resupply ship that will collect us in spring is called the {vessel}.",
            "What is the name of the resupply ship that will collect the crew in spring?",
            vessel,
        ),
        Fact(
            f"We moved the spare ice axes to {hut} for the winter.",
            "Where were the spare ice axes moved for the winter?",
            hut,
        ),
    ]


def _entry(rng: random.Random, day: int) -> str:
    a, b = rng.sample(_CREW, 2)
    lines = [
        f"Day {day}. We woke to {rng.choice(_WEATHER)}; the thermometer read "
        f"{rng.randint(-38, -2)} degrees.",
        f"{a} {rng.choice(_WORK)}, while {b} {rng.choice(_WORK)}.",
        f"Fuel left: {rng.randint(200, 4000)} litres. Dinner was {rng.choice(_MEALS)}, and "
        f"the crew seemed {rng.choice(_MOODS)}.",
    ]
    if rng.random() < 0.5:
        c = rng.choice(_CREW)
        lines.append(
            f"{c} noted {rng.randint(2, 60)} {rng.choice(['skuas', 'petrels', 'seals', 'penguins'])} "
            f"near the {rng.choice(['shore', 'ridge', 'lagoon', 'ice edge'])}."
        )
    return " ".join(lines)


def journal(n_words: int = 24000, seed: int = 7, fact_day: int = 6) -> tuple[str, list[Fact]]:
    """A journal of about ``n_words`` words; the facts are written on day ``fact_day``."""
    rng = random.Random(seed)
    facts = _facts(rng)
    entries, words, day = [], 0, 1
    while words < n_words:
        e = _entry(rng, day)
        if day == fact_day:
            e += " " + " ".join(f.text for f in facts)
        entries.append(e)
        words += len(e.split())
        day += 1
    return "\n\n".join(entries) + "\n", facts


JOURNAL_SOURCE = "station-journal.txt"
DEMO_SOURCES = frozenset({JOURNAL_SOURCE, USER_SOURCE, ASSISTANT_SOURCE})  # what a demo tree holds


def clear_demo_tree(url: str, storage_options: dict | None = None) -> bool:
    """Make room for a fresh demo tree at ``url``: delete the tree there if it holds only what
    a demo writes, refuse (``PathTaken``) if anything else is there; True if one was deleted.
    The demo is rebuilt on every run, but never at the expense of something else."""
    import mcstore
    from mcruntime.errors import PathTaken
    from mcruntime.location import check_new

    check_new(url)  # a file, or a folder of other files: refused
    try:
        t = mcstore.open(url, storage_options=storage_options)
    except mcstore.TreeNotFound:
        return False
    except mcstore.StoreError:
        raise PathTaken(f"{url} holds something that is not a MegaContext tree") from None
    other = sorted({seg.source for seg in t.segments()} - DEMO_SOURCES)
    if other:
        raise PathTaken(
            f"{url} is a MegaContext tree with more than the demo in it ({other[0]!r}, …); "
            "the demo will not replace it"
        )
    t.close()
    mcstore.destroy(url, storage_options=storage_options)
    return True
