"""Relative times in remembered chat turns, given the dates they mean.

A turn remembered on 8 May 2023 that says "I went to a support group yesterday" answers "When
did she go?" only to a reader that works out 7 May 2023 from the turn's date, and a 1.5B reader
mostly does not: shown the date beside the turn and told to resolve "yesterday", it still
answered "yesterday", "8 May" or that its memory holds nothing (LoCoMo dev, the reader handed
the evidence turns: temporal F1 0.14, 0.25 with the instruction alone). So before a chat turn is
shown to a reader, each relative time in it is followed by what it means, worked out from when
the turn was said (the segment's time): "yesterday (7 May 2023)", "last week (the week before
8 May 2023)", "next month (June 2023)", "last Friday (the Friday before 15 July 2023)". Exact
days get a date; spans that English leaves vague ("last week", "last Friday") get a phrase
anchored on the turn's date rather than a guess. Documents are left alone: their time is when
they were ingested, not when their words were written.
"""

from __future__ import annotations

import datetime as dt
import re

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
            "seven": 7, "eight": 8, "nine": 9, "ten": 10, "couple of": 2, "few": None}  # fmt: skip
_COUNT = r"(\d+|an?|one|two|three|four|five|six|seven|eight|nine|ten|a couple of|a few)"
_RULES = re.compile(
    r"\b(?:"
    r"(?P<dbye>the day before yesterday)|(?P<dat>the day after tomorrow)"
    r"|(?P<day>yesterday|today|tonight|tomorrow|last night|this morning)"
    rf"|(?P<ago>{_COUNT} (?P<unit>days?|weeks?|months?|years?) ago)"
    r"|(?P<rel>(?:last|this|next) (?:week(?:end)?|month|year))"
    rf"|(?P<wd>(?:last|this|next) (?:{'|'.join(_WEEKDAYS)}))"
    r")\b(?! \()",  # not twice: text already followed by a bracket is left alone
    re.I,
)


def day_text(d: dt.date) -> str:
    return f"{d.day} {d.strftime('%B')} {d.year}"


def month_text(year: int, month: int) -> str:
    return f"{dt.date(year, month, 1).strftime('%B')} {year}"


def _shift_month(d: dt.date, n: int) -> tuple[int, int]:
    m = d.month - 1 + n
    return d.year + m // 12, m % 12 + 1


def meaning(phrase: str, said: dt.date) -> str | None:
    """What the relative time ``phrase`` means when said on ``said``, or None."""
    p = " ".join(phrase.lower().split())
    one = dt.timedelta(days=1)
    fixed = {"yesterday": -1, "last night": -1, "today": 0, "tonight": 0, "this morning": 0,
             "tomorrow": 1, "the day before yesterday": -2, "the day after tomorrow": 2}  # fmt: skip
    if p in fixed:
        return day_text(said + fixed[p] * one)
    if p.endswith(" ago"):
        count, unit = p[: -len(" ago")].rsplit(" ", 1)
        n = int(count) if count.isdigit() else _NUMBERS.get(count.removeprefix("a ").strip())
        unit = unit.rstrip("s")
        if n is None:
            return f"a few {unit}s before {day_text(said)}"
        if unit == "day":
            return day_text(said - n * one)
        if unit == "week":
            return f"the week of {day_text(said - 7 * n * one)}"
        if unit == "month":
            return month_text(*_shift_month(said, -n))
        return str(said.year - n)
    which, what = p.split(" ", 1)
    step = {"last": -1, "this": 0, "next": 1}[which]
    if what == "month":
        return month_text(*_shift_month(said, step))
    if what == "year":
        return str(said.year + step)
    if what in ("week", "weekend"):
        where = {-1: "before", 0: "of", 1: "after"}[step]
        return f"the {what} {where} {day_text(said)}"
    where = {-1: "before", 0: "of the week of", 1: "after"}[step]
    return f"the {what.capitalize()} {where} {day_text(said)}"


def dated(text: str, said: dt.date) -> str:
    """``text`` with every relative time followed by its meaning in brackets."""

    def sub(m: re.Match) -> str:
        got = meaning(m.group(0), said)
        return f"{m.group(0)} ({got})" if got else m.group(0)

    return _RULES.sub(sub, text)


def said_on(time_ns: int) -> dt.date:
    """The local date of a segment's time (ns since the epoch)."""
    return dt.datetime.fromtimestamp(time_ns / 1e9).date()
