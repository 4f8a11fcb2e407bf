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
* scores are Okapi BM25 (Lucene's idf, k1 = 1.2, b = 0.75) over blocks.

Why hand-written postings rather than bm25s or tantivy: the tree's index must grow by appends
and persist as immutable per-epoch objects inside the store's commit protocol (crash-safe,
versioned, on S3). bm25s indexes a fixed corpus (re-index on growth); tantivy keeps its own
mutable segment files beside the tree. The postings here are sorted numpy arrays, kept as a
few segments merged Lucene-style, which is all BM25 needs.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass

import numpy as np

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


def query_terms(text: str) -> np.ndarray:
    """Distinct content words of a question, hashed."""
    ws = [w for w in dict.fromkeys(words(text)) if w not in STOPWORDS]
    return term_ids(ws)


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

    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        lo = np.searchsorted(self.terms, term, "left")
        hi = np.searchsorted(self.terms, term, "right")
        return self.blocks[lo:hi], self.tf[lo:hi]


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

    def scores(self, terms: np.ndarray, *, matched: bool = False):
        """(blocks, BM25 scores) of every block that holds at least one of ``terms``; with
        ``matched``, also the summed idf of the terms each block holds."""
        n = len(self.dl)
        if n == 0 or len(terms) == 0:
            e = (np.zeros(0, np.int64), np.zeros(0, np.float32))
            return (*e, np.zeros(0, np.float32)) if matched else e
        avgdl = max(float(self.dl.mean()), 1.0)
        cand, vals, idfs = [], [], []
        for t in np.unique(terms):
            got = [s.postings(int(t)) for s in self.segments]
            blocks = np.concatenate([g[0] for g in got])
            if not len(blocks):
                continue
            tf = np.concatenate([g[1] for g in got])
            df = len(blocks)
            idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
            norm = K1 * (1.0 - B + B * self.dl[blocks] / avgdl)
            cand.append(blocks)
            vals.append((idf * tf * (K1 + 1) / (tf + norm)).astype(np.float32))
            idfs.append(np.full(len(blocks), idf, np.float32))
        if not cand:
            e = (np.zeros(0, np.int64), np.zeros(0, np.float32))
            return (*e, np.zeros(0, np.float32)) if matched else e
        blocks, inv = np.unique(np.concatenate(cand), return_inverse=True)
        sc = np.zeros(len(blocks), np.float32)
        np.add.at(sc, inv, np.concatenate(vals))
        if not matched:
            return blocks, sc
        got = np.zeros(len(blocks), np.float32)
        np.add.at(got, inv, np.concatenate(idfs))
        return blocks, sc, got

    def idf(self, terms: np.ndarray) -> np.ndarray:
        """BM25 idf of each term (a term no block holds gets the highest)."""
        n = len(self.dl)
        out = np.zeros(len(terms), np.float32)
        for k, t in enumerate(terms):
            df = sum(len(s.postings(int(t))[0]) for s in self.segments)
            out[k] = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
        return out

    def search(self, terms: np.ndarray, k: int) -> list[tuple[int, float]]:
        blocks, sc = self.scores(terms)
        if not len(blocks):
            return []
        top = np.argsort(-sc, kind="stable")[:k]
        return [(int(blocks[i]), float(sc[i])) for i in top]
