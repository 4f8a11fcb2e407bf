"""Exact lexical keys: a BM25 inverted index over the words of level-1 blocks.

Why not embeddings of tokens: the IDF-weighted mean of token embeddings of a 32-token block is
dominated by what every block shares (hits scored 0.98–0.99 cosine on real text, effectively
random), so a fact stated once was not found. Words are what a question shares with the fact it
asks about, so the keys are words:

* a block's words come from its decoded text (sub-word pieces joined), lower-cased, numbers kept;
  a word cut by the block's end is completed from the next block's first tokens; identifiers with
  underscores are indexed whole and by part;
* a word is stored as the crc32 of its UTF-8 bytes (no vocabulary to keep in sync across
  processes; collisions at 2³² are negligible for a block index);
* scores are Okapi BM25 (Lucene's idf, k1 = 1.2, b = 0.75) over blocks;
* a question's word also matches the other forms of it that share its English (Snowball)
  stem: "What did Caroline research?" finds "Researching adoption agencies". The forms are
  made at query time (``forms``) and looked up as one term (their postings joined, one idf),
  so stored indexes keep surface words and every tree, old or new, gains it (LoCoMo dev:
  the evidence turns in BM25's best 10 rose from 0.59 to 0.63).

Why hand-written postings rather than bm25s or tantivy: the tree's index must grow by appends
and persist as immutable per-epoch objects inside the store's commit protocol (crash-safe,
versioned, on S3). bm25s indexes a fixed corpus (re-index on growth); tantivy keeps its own
mutable segment files beside the tree. The postings here are sorted numpy arrays, kept as a
few segments merged Lucene-style, which is all BM25 needs.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import snowballstemmer

K1, B = 1.2, 0.75
_WORD = re.compile(r"\w+", re.UNICODE)
EXTEND = 8  # tokens of the next block decoded to complete a word cut by the block's end
MAX_SEGMENTS = 8  # postings segments kept before they are merged into one

# Words that carry no content in a question; they still score in documents (BM25's idf makes
# them cheap), but a hit that matches only these is no hit.
STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i if in
    into is it its me my of on or our so than that the their them then there these they this to
    us was we were what when where which who whom whose why will with would you your yours
    tell told said say please remember answer question briefly about""".split()
)


def words(text: str) -> list[str]:
    """Normalised words of ``text``: lower-cased ``\\w+`` runs, with the parts of
    underscore-joined identifiers added."""
    out = []
    for w in _WORD.findall(text.lower()):
        out.append(w)
        if "_" in w:
            out += [p for p in w.split("_") if p]
    return out


def term_ids(ws) -> np.ndarray:
    return np.fromiter((zlib.crc32(w.encode()) for w in ws), dtype=np.uint32)


_STEMMER = snowballstemmer.stemmer("english")
_STEM_LOCK = threading.Lock()  # a Snowball stemmer object keeps state while it works
# endings a form of a word may carry, tried on the word, its stem and the stem's usual
# spellings (a stem ending -i may be -y, a dropped -e restored); kept only where the form's
# stem is the word's own, so nothing Snowball would not conflate is ever matched
_ENDINGS = ("", "s", "es", "e", "ed", "d", "ing", "er", "ers", "ion", "ions", "ation",
            "ations", "y", "ies", "ied", "ly", "ment", "ments", "al", "ness", "ity", "ful")  # fmt: skip
_DOUBLED = ("ed", "ing", "er", "ers")  # stop -> stopped, stopping


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    with _STEM_LOCK:
        return _STEMMER.stemWord(word)


@lru_cache(maxsize=16384)
def forms(word: str) -> tuple[str, ...]:
    """``word`` and its other forms sharing its stem, as an index of surface words may hold
    them ("research": "researched", "researcher", "researching", …). Words with digits or
    underscores, and words of three letters or fewer, stand for themselves only."""
    if len(word) <= 3 or not word.isalpha():
        return (word,)
    s = stem(word)
    roots = {word, s, s + "e"}
    if s.endswith("i"):
        roots.add(s[:-1] + "y")
    if s.endswith("e"):
        roots.add(s[:-1])
    cands = {r + e for r in roots for e in _ENDINGS}
    cands |= {s + s[-1] + e for e in _DOUBLED}
    return (word, *sorted(c for c in cands if c != word and stem(c) == s))


@dataclass(frozen=True)
class QueryTerms:
    """A question's content words, each with the hashes of its forms: the index scores a word
    once, over every block holding any of its forms."""

    ids: np.ndarray  # uint32: every form of every word
    group: np.ndarray  # int64: which word each form belongs to
    n: int  # words

    def __len__(self) -> int:
        return self.n

    @classmethod
    def of(cls, ws, *, conflate: bool = True) -> QueryTerms:
        ws = list(dict.fromkeys(ws))
        fs = [forms(w) if conflate else (w,) for w in ws]
        ids = np.concatenate([term_ids(f) for f in fs]) if fs else np.zeros(0, np.uint32)
        group = np.repeat(np.arange(len(fs), dtype=np.int64), [len(f) for f in fs])
        return cls(ids, group, len(fs))

    @classmethod
    def hashed(cls, ids) -> QueryTerms:
        """Hashed words, each its own term (no other forms)."""
        ids = np.unique(np.asarray(ids, np.uint32))
        return cls(ids, np.arange(len(ids), dtype=np.int64), len(ids))

    def found(self, have: set[int]) -> np.ndarray:
        """Per word: whether any of its forms is among the hashes ``have``."""
        hit = np.fromiter((int(t) in have for t in self.ids), bool, len(self.ids))
        out = np.zeros(self.n, bool)
        np.logical_or.at(out, self.group, hit)
        return out


def query_terms(text: str) -> QueryTerms:
    """Distinct content words of a question with their forms, hashed."""
    return QueryTerms.of(w for w in words(text) if w not in STOPWORDS)


@dataclass
class BlockTerms:
    """Sparse term counts of consecutive blocks: block ``i``'s terms are
    ``terms[offsets[i]:offsets[i+1]]`` with counts ``tf``; ``dl`` its length in words."""

    offsets: np.ndarray  # int64 [k + 1]
    terms: np.ndarray  # uint32
    tf: np.ndarray  # uint16
    dl: np.ndarray  # uint16 [k]

    def __len__(self) -> int:
        return len(self.dl)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "offsets": self.offsets.astype(np.int64),
            "terms": self.terms.astype(np.uint32),
            "tf": self.tf.astype(np.uint16),
            "dl": self.dl.astype(np.uint16),
        }

    @classmethod
    def from_arrays(cls, z) -> BlockTerms:
        return cls(
            np.asarray(z["offsets"], np.int64),
            np.asarray(z["terms"], np.uint32),
            np.asarray(z["tf"], np.uint16),
            np.asarray(z["dl"], np.uint16),
        )

    def slice(self, i: int, j: int) -> BlockTerms:
        """Blocks ``i .. j-1``."""
        a, b = int(self.offsets[i]), int(self.offsets[j])
        return BlockTerms(self.offsets[i : j + 1] - a, self.terms[a:b], self.tf[a:b], self.dl[i:j])

    @classmethod
    def concat(cls, parts: list[BlockTerms]) -> BlockTerms:
        if not parts:
            return empty_terms()
        offs, base = [np.zeros(1, np.int64)], 0
        for p in parts:
            offs.append(p.offsets[1:] + base)
            base += int(p.offsets[-1])
        return cls(
            np.concatenate(offs),
            np.concatenate([p.terms for p in parts]),
            np.concatenate([p.tf for p in parts]),
            np.concatenate([p.dl for p in parts]),
        )


def empty_terms() -> BlockTerms:
    return BlockTerms(
        np.zeros(1, np.int64),
        np.zeros(0, np.uint32),
        np.zeros(0, np.uint16),
        np.zeros(0, np.uint16),
    )


def block_terms(
    decode, ids: np.ndarray, block: int, following: np.ndarray | None = None
) -> BlockTerms:
    """Terms of each complete block of ``ids`` (``decode``: token ids -> text). ``following``:
    the tokens after ``ids`` (to complete the last block's final word), if known."""
    ids = np.asarray(ids)
    k = len(ids) // block
    nxt = np.asarray(following if following is not None else [], dtype=ids.dtype)[:EXTEND]
    offsets, terms, tfs, dls = [0], [], [], []
    for i in range(k):
        own = ids[i * block : (i + 1) * block]
        tail = ids[(i + 1) * block : (i + 1) * block + EXTEND] if i + 1 < k else nxt
        text = decode(own)
        ext = decode(np.concatenate([own, tail])) if len(tail) else text
        ws = [m.group(0) for m in _WORD.finditer(ext.lower()) if m.start() < len(text)]
        ws = words(" ".join(ws))
        c = Counter(ws)
        terms.append(term_ids(c.keys()))
        tfs.append(np.fromiter(c.values(), dtype=np.int64, count=len(c)))
        dls.append(len(ws))
        offsets.append(offsets[-1] + len(c))
    if not k:
        return empty_terms()
    return BlockTerms(
        np.asarray(offsets, np.int64),
        np.concatenate(terms).astype(np.uint32),
        np.minimum(np.concatenate(tfs), 65535).astype(np.uint16),
        np.minimum(np.asarray(dls), 65535).astype(np.uint16),
    )


class _Segment:
    """Postings of a run of blocks, sorted by term."""

    def __init__(self, bt: BlockTerms, first: int):
        counts = np.diff(bt.offsets)
        blocks = np.repeat(np.arange(first, first + len(bt), dtype=np.int64), counts)
        order = np.argsort(bt.terms, kind="stable")
        self.terms = bt.terms[order]
        self.blocks = blocks[order]
        self.tf = bt.tf[order].astype(np.float32)

    @classmethod
    def merged(cls, segs: list[_Segment]) -> _Segment:
        out = cls.__new__(cls)
        terms = np.concatenate([s.terms for s in segs])
        order = np.argsort(terms, kind="stable")
        out.terms = terms[order]
        out.blocks = np.concatenate([s.blocks for s in segs])[order]
        out.tf = np.concatenate([s.tf for s in segs])[order]
        return out


class LexicalIndex:
    """BM25 over blocks, growing by appends of consecutive blocks."""

    def __init__(self):
        self.segments: list[_Segment] = []
        self.dl = np.zeros(0, np.float32)
        self.postings = 0

    def __len__(self) -> int:
        return len(self.dl)

    def add(self, bt: BlockTerms) -> None:
        if not len(bt):
            return
        self.segments.append(_Segment(bt, len(self.dl)))
        self.dl = np.concatenate([self.dl, bt.dl.astype(np.float32)])
        self.postings += len(bt.terms)
        if len(self.segments) > MAX_SEGMENTS:
            self.segments = [_Segment.merged(self.segments)]

    def scores(self, terms: QueryTerms | np.ndarray, *, matched: bool = False):
        """(blocks, BM25 scores) of every block that holds at least one of ``terms`` (a word
        counts once per block however many of its forms it holds: their counts add up); with
        ``matched``, also the summed idf of the words each block holds."""
        terms = _as_terms(terms)
        n = len(self.dl)
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        if n == 0 or not len(terms):
            return (*empty, np.zeros(0, np.float32)) if matched else empty
        avgdl = max(float(self.dl.mean()), 1.0)
        cand, vals, idfs = [], [], []
        for g in range(terms.n):
            blocks, tf = self._postings(terms.ids[terms.group == g])
            if not len(blocks):
                continue
            idf = self._idf(len(blocks))
            norm = K1 * (1.0 - B + B * self.dl[blocks] / avgdl)
            cand.append(blocks)
            vals.append((idf * tf * (K1 + 1) / (tf + norm)).astype(np.float32))
            idfs.append(np.full(len(blocks), idf, np.float32))
        if not cand:
            return (*empty, np.zeros(0, np.float32)) if matched else empty
        blocks, inv = np.unique(np.concatenate(cand), return_inverse=True)
        sc = np.zeros(len(blocks), np.float32)
        np.add.at(sc, inv, np.concatenate(vals))
        if not matched:
            return blocks, sc
        got = np.zeros(len(blocks), np.float32)
        np.add.at(got, inv, np.concatenate(idfs))
        return blocks, sc, got

    def _postings(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(blocks, summed tf) of the blocks holding any of the hashes ``ids`` (most forms a
        query tries are in no block: each segment looks all of them up at once)."""
        ids = np.unique(np.asarray(ids, np.uint32))
        blocks, tf = [], []
        for seg in self.segments:
            lo = np.searchsorted(seg.terms, ids, "left")
            hi = np.searchsorted(seg.terms, ids, "right")
            for a, b in zip(lo[hi > lo].tolist(), hi[hi > lo].tolist(), strict=True):
                blocks.append(seg.blocks[a:b])
                tf.append(seg.tf[a:b])
        if not blocks:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        blocks, tf = np.concatenate(blocks), np.concatenate(tf)
        if len(blocks) > 1:  # a block holding two forms of the word: one posting, tf summed
            blocks, inv = np.unique(blocks, return_inverse=True)
            summed = np.zeros(len(blocks), np.float32)
            np.add.at(summed, inv, tf)
            tf = summed
        return blocks, tf

    def _idf(self, df: int) -> float:
        n = len(self.dl)
        return float(np.log(1.0 + (n - df + 0.5) / (df + 0.5)))

    def idf(self, terms: QueryTerms | np.ndarray) -> np.ndarray:
        """BM25 idf of each word, over the blocks holding any of its forms (a word no block
        holds gets the highest)."""
        terms = _as_terms(terms)
        out = np.zeros(terms.n, np.float32)
        for g in range(terms.n):
            out[g] = self._idf(len(self._postings(terms.ids[terms.group == g])[0]))
        return out

    def search(self, terms: QueryTerms | np.ndarray, k: int) -> list[tuple[int, float]]:
        blocks, sc = self.scores(terms)
        if not len(blocks):
            return []
        top = np.argsort(-sc, kind="stable")[:k]
        return [(int(blocks[i]), float(sc[i])) for i in top]


def _as_terms(terms: QueryTerms | np.ndarray) -> QueryTerms:
    return terms if isinstance(terms, QueryTerms) else QueryTerms.hashed(terms)
