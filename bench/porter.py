"""The Porter stemmer as LoCoMo's scorer applies it (``nltk.stem.PorterStemmer()``).

LoCoMo's token F1 stems every answer word with NLTK's Porter stemmer in its default mode: the
published algorithm (M. F. Porter, "An algorithm for suffix stripping", 1980) with NLTK's
extensions (a few irregular forms, words of one or two letters left alone, ``-ies``/``-ied`` of
four-letter words kept as ``-ie``, ``-y`` to ``-i`` only after a consonant that is not the first
letter, ``-alli``/``-fulli``/``-logi`` in step 2, and a two-letter vowel-consonant stem counting
as *cvc*). This is an implementation of that definition, so scores match the paper's without
depending on nltk; ``tests/bench/test_locomo.py`` pins the words whose stems differ between the
modes.
"""

from __future__ import annotations

from functools import lru_cache

_VOWELS = frozenset("aeiou")
_IRREGULAR = {
    "skies": "sky",
    "sky": "sky",
    "dying": "die",
    "lying": "lie",
    "tying": "tie",
    "news": "news",
    "innings": "inning",
    "inning": "inning",
    "outings": "outing",
    "outing": "outing",
    "cannings": "canning",
    "canning": "canning",
    "howe": "howe",
    "proceed": "proceed",
    "exceed": "exceed",
    "succeed": "succeed",
}


def _cons(w: str, i: int) -> bool:
    """Whether letter ``i`` of ``w`` is a consonant (``y`` is one after a vowel or first)."""
    c = w[i]
    if c in _VOWELS:
        return False
    if c == "y":
        return i == 0 or not _cons(w, i - 1)
    return True


def _m(stem: str) -> int:
    """Porter's measure: the number of vowel-consonant sequences in ``stem``."""
    form = "".join("c" if _cons(stem, i) else "v" for i in range(len(stem)))
    return form.count("vc")


def _has_vowel(stem: str) -> bool:
    return any(not _cons(stem, i) for i in range(len(stem)))


def _double(w: str) -> bool:
    return len(w) >= 2 and w[-1] == w[-2] and _cons(w, len(w) - 1)


def _cvc(w: str) -> bool:
    n = len(w)
    if n >= 3:
        return _cons(w, n - 3) and not _cons(w, n - 2) and _cons(w, n - 1) and w[-1] not in "wxy"
    return n == 2 and not _cons(w, 0) and _cons(w, 1)


def _m_pos(stem: str) -> bool:
    return _m(stem) > 0


def _m_gt1(stem: str) -> bool:
    return _m(stem) > 1


def _rules(word: str, rules) -> str:
    """The first rule whose suffix ends ``word`` decides: replaced if its condition holds on
    the stem, else the word stays (Porter's longest-match-per-step)."""
    for suffix, repl, cond in rules:
        if word.endswith(suffix):
            stem = word[: len(word) - len(suffix)]
            return stem + repl if cond is None or cond(stem) else word
    return word


def _step1a(w: str) -> str:
    if w.endswith("ies") and len(w) == 4:
        return w[:-3] + "ie"
    return _rules(
        w, (("sses", "ss", None), ("ies", "i", None), ("ss", "ss", None), ("s", "", None))
    )


def _step1b(w: str) -> str:
    if w.endswith("ied"):
        return w[:-3] + ("ie" if len(w) == 4 else "i")
    if w.endswith("eed"):
        return w[:-1] if _m(w[:-3]) > 0 else w
    for suffix in ("ed", "ing"):
        if w.endswith(suffix) and _has_vowel(w[: -len(suffix)]):
            s = w[: -len(suffix)]
            break
    else:
        return w
    for end, repl in (("at", "ate"), ("bl", "ble"), ("iz", "ize")):
        if s.endswith(end):
            return s[: -len(end)] + repl
    if _double(s):
        return s if s[-1] in "lsz" else s[:-1]
    return s + "e" if _m(s) == 1 and _cvc(s) else s


def _step1c(w: str) -> str:
    if w.endswith("y") and len(w) > 2 and _cons(w, len(w) - 2):
        return w[:-1] + "i"
    return w


_STEP2 = [
    (suffix, repl, _m_pos)
    for suffix, repl in (
        ("ational", "ate"),
        ("tional", "tion"),
        ("enci", "ence"),
        ("anci", "ance"),
        ("izer", "ize"),
        ("bli", "ble"),
        ("alli", "al"),
        ("entli", "ent"),
        ("eli", "e"),
        ("ousli", "ous"),
        ("ization", "ize"),
        ("ation", "ate"),
        ("ator", "ate"),
        ("alism", "al"),
        ("iveness", "ive"),
        ("fulness", "ful"),
        ("ousness", "ous"),
        ("aliti", "al"),
        ("iviti", "ive"),
        ("biliti", "ble"),
        ("fulli", "ful"),
    )
]


def _step2(w: str) -> str:
    if w.endswith("alli") and _m_pos(w[:-4]):
        return _step2(w[:-4] + "al")
    if w.endswith("logi") and not any(w.endswith(s) for s, _, _ in _STEP2):
        return w[:-1] if _m_pos(w[:-3]) else w
    return _rules(w, _STEP2)


_STEP3 = [
    (s, r, _m_pos)
    for s, r in (
        ("icate", "ic"),
        ("ative", ""),
        ("alize", "al"),
        ("iciti", "ic"),
        ("ical", "ic"),
        ("ful", ""),
        ("ness", ""),
    )
]
_STEP4 = [
    (s, "", (lambda st: _m_gt1(st) and st[-1:] in ("s", "t")) if s == "ion" else _m_gt1)
    for s in (
        "al ance ence er ic able ible ant ement ment ent ion ou ism ate iti ous ive ize".split()
    )
]


def _step5(w: str) -> str:
    if w.endswith("e"):
        s = w[:-1]
        if _m(s) > 1 or (_m(s) == 1 and not _cvc(s)):
            w = s
    if w.endswith("ll") and _m(w[:-1]) > 1:
        w = w[:-1]
    return w


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The stem of one word, lower-cased, as ``nltk.stem.PorterStemmer().stem`` gives it."""
    w = word.lower()
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 2:
        return w
    w = _step1c(_step1b(_step1a(w)))
    w = _rules(_step2(w), _STEP3)
    return _step5(_rules(w, _STEP4))
