"""Relative times in chat turns followed by the dates they mean."""

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from mcruntime.dates import dated, meaning, said_on

MAY_8 = dt.date(2023, 5, 8)  # a Monday


def test_exact_days_get_a_date():
    assert dated("I went there yesterday.", MAY_8) == "I went there yesterday (7 May 2023)."
    assert meaning("Tomorrow", MAY_8) == "9 May 2023"
    assert meaning("the day before yesterday", MAY_8) == "6 May 2023"
    assert meaning("two days ago", MAY_8) == "6 May 2023"
    assert meaning("3 days ago", dt.date(2023, 3, 2)) == "27 February 2023"


def test_spans_get_a_phrase_anchored_on_the_day_said():
    assert meaning("last week", MAY_8) == "the week before 8 May 2023"
    assert meaning("this weekend", MAY_8) == "the weekend of 8 May 2023"
    assert meaning("last Friday", MAY_8) == "the Friday before 8 May 2023"
    assert meaning("a few weeks ago", MAY_8) == "a few weeks before 8 May 2023"


def test_months_and_years_cross_their_boundaries():
    assert meaning("next month", dt.date(2023, 12, 30)) == "January 2024"
    assert meaning("last month", dt.date(2023, 1, 5)) == "December 2022"
    assert meaning("two months ago", dt.date(2023, 1, 5)) == "November 2022"
    assert meaning("last year", MAY_8) == "2022"


def test_text_already_dated_and_words_that_only_look_alike_are_left_alone():
    once = dated("yesterday I ran", MAY_8)
    assert dated(once, MAY_8) == once == "yesterday (7 May 2023) I ran"
    assert dated("the yesterdays of last weekday", MAY_8) == "the yesterdays of last weekday"


@given(st.text(max_size=200), st.dates(dt.date(1900, 1, 1), dt.date(2200, 1, 1)))
def test_only_brackets_are_added(text, day):
    out = dated(text, day)
    assert out.replace(" (", "(").count("(") >= text.count("(")
    # removing every added bracket gives the text back
    import re

    assert re.sub(r" \([^()]*\)", "", out) == re.sub(r" \([^()]*\)", "", text)


def test_said_on_reads_a_segment_time():
    ns = int(dt.datetime(2023, 5, 8, 13, 56).timestamp() * 1e9)
    assert said_on(ns) == MAY_8
