"""Keeps a tree's retrieval index current and stored with it, and turns hits into score boosts.

Stored form: each complete epoch (``tree.epoch`` tokens) becomes one immutable committed object
per key kind, ``retrieval/<kind>/l1-<first>-<stop>.npz``, written once when the epoch completes:
``bm25`` holds the sparse word counts of its blocks (``mcruntime.lexical.BlockTerms``), a dense
kind its fp16 keys. Opening reads the chunks and indexes only the blocks committed since the
last one, so open work is bounded by one epoch of tokens plus a read of the stored chunks;
storing is linear in the new epochs. A block is indexed once the few tokens after it exist (a
word cut by its end is completed from them), so incremental and one-shot builds agree exactly.
"""

from __future__ import annotations

import io
import re

import numpy as np
import torch

import mcstore
from mcruntime.context import WorkingContext
from mcruntime.lexical import (
    EXTEND,
    BlockTerms,
    LexicalIndex,
    QueryTerms,
    block_terms,
    query_terms,
    term_ids,
    words,
)
from mcruntime.retrieval import KEY_KINDS, Hit, KeyIndex, Keys, interleave

_CHUNK = re.compile(r"^retrieval/([\w.-]+)/l1-(\d{12})-(\d{12})\.npz$")
BM25 = Keys.BM25
CHUNK_BYTES = 2**28  # one epoch's keys inflated: far above any real chunk (~1 MB)
TITLE_WEIGHT = 1.0  # how much a query word in a block's source name counts (x its idf)
# A block found by meaning alone must be at least this close (cosine of centred static keys)
# to the question. On the dense probe's dev haystacks ("static_similarity" in
# bench/results/dense_probe.json) the fact's block scores 0.15 or more for 95% of questions,
# but the best unrelated block of 512 also reaches 0.23 (median): similarity cannot tell
# "not in memory" apart, so the floor only drops blocks that share nothing at all;
# a reader that finds nothing in what it is shown says so (``mcruntime.reading``).
MIN_SIMILARITY = 0.15
# A word hit that covers this share of the question's word weight (idf) found what was asked:
# meaning hits are then left out, since beside it they are near-duplicates of the same form
# ("the code of the red locker is …" for a question about the blue one) that a reader confuses
# with the answer. Below it (a paraphrase: only common words match), both lists are used.
WORDS_SUFFICE = 0.6


class NodeIndex:
    """The retrieval index of one tree for one base model (see ``mcruntime.retrieval``)."""

    def __init__(
        self,
        tree,
        base,
        *,
        kind: str = BM25,
        boost: float = 2.0,
        min_coverage: float = 0.0,
        dense_spec=None,
    ):
        if kind not in KEY_KINDS:
            raise ValueError(f"unknown retrieval kind {kind!r}; choose from {KEY_KINDS}")
        self.tree, self.base, self.kind, self.boost = tree, base, kind, boost
        self.min_coverage = min_coverage
        self.mean = base.embedding_stats()["mean"].float().numpy()
        self.lex = LexicalIndex() if kind in (BM25, Keys.HYBRID) else None
        self.dense = None
        self.dense_name = None
        if kind == Keys.HYBRID:
            from mcruntime.static_keys import spec_from_id

            recorded = ((tree.binding or {}).get("retrieval") or {}).get("dense")
            self.dense_spec = dense_spec or spec_from_id(recorded)
            self.dense_name = "dense-" + self.dense_spec.id(base)
            self.dense = KeyIndex(base.d_model)
        elif kind == Keys.GIST:
            self.dense = KeyIndex(base.d_model)
        self.stored: dict[str, int] = {}  # chunk kind -> level-1 blocks covered by chunks
        self._titles: dict[str, set[int]] = {}  # source name -> its word ids
        self._starts = np.zeros(0, np.int64)  # start token of each segment seen so far
        self._unstored_parts: list[BlockTerms] = []  # terms of the blocks after stored[bm25]
        self._load()
        self.update()

    @property
    def chunk_kinds(self) -> list[str]:
        return [k for k in (BM25 if self.lex is not None else None, self.dense_name) if k]

    def ready(self) -> int:
        """Level-1 blocks that can be indexed: complete, with EXTEND tokens after them."""
        return max(0, self.tree.length - EXTEND) // self.tree.block

    def indexed(self) -> int:
        counts = []
        if self.lex is not None:
            counts.append(len(self.lex))
        if self.dense is not None:
            counts.append(self.dense.count(1))
        return min(counts)

    # -- stored chunks ------------------------------------------------------------------------

    def _chunks(self, kind: str) -> list[tuple[int, int, str]]:
        out = []
        for name in self.tree.objects():
            m = _CHUNK.match(name)
            if m and m.group(1) == kind:
                out.append((int(m.group(2)), int(m.group(3)), name))
        return sorted(out)

    def _load(self) -> None:
        """Read the stored chunks: for each kind the contiguous run from block 0, and for a
        hybrid index only as far as both kinds reach (the rest is indexed from tokens)."""
        runs: dict[str, list[tuple[int, int, str]]] = {}
        for kind in self.chunk_kinds:
            run: list[tuple[int, int, str]] = []
            for first, stop, name in self._chunks(kind):
                if first != (run[-1][1] if run else 0) or stop > self.ready():
                    break  # a gap, or a chunk from another history
                run.append((first, stop, name))
            runs[kind] = run
        reach = min((r[-1][1] if r else 0) for r in runs.values()) if runs else 0
        for kind, run in runs.items():
            have = 0
            for _first, stop, name in run:
                if stop > reach:
                    break
                try:
                    z = mcstore.load_npz(self.tree.read_object(name), max_bytes=CHUNK_BYTES)
                except ValueError as e:
                    raise mcstore.CorruptTree(
                        f"{self.tree.url}: retrieval chunk {name} is damaged ({e}); "
                        "restore the tree from a copy"
                    ) from None
                if kind == BM25:
                    self.lex.add(BlockTerms.from_arrays(z))
                else:
                    self.dense.add(1, z["keys"].astype(np.float32))
                have = stop
            self.stored[kind] = have

    def persist(self) -> int:
        """Commit a chunk for every complete epoch not stored yet; returns chunks written."""
        if self.kind == Keys.GIST or self.tree.mode == "r":
            return 0
        per = self.tree.epoch // self.tree.block
        have = self.indexed()
        base = self.stored.get(BM25, 0)  # the first block of ``unstored``
        unstored = BlockTerms.concat(self._unstored_parts)
        objects = {}
        for kind in self.chunk_kinds:
            stored = self.stored.get(kind, 0)
            while (stored // per + 1) * per <= have:
                first, stop = stored, (stored // per + 1) * per
                buf = io.BytesIO()
                if kind == BM25:  # the terms update() computed, not decoded again
                    arrays = unstored.slice(first - base, stop - base).to_arrays()
                else:
                    arrays = {"keys": self.dense.keys(1, first, stop).astype(np.float16)}
                np.savez_compressed(buf, **arrays)
                objects[f"retrieval/{kind}/l1-{first:012d}-{stop:012d}.npz"] = buf.getvalue()
                stored = stop
            self.stored[kind] = stored
        if objects:
            self.tree.commit_objects(objects, message=f"retrieval index up to block {have}")
        if self.lex is not None:  # keep the terms of blocks not stored yet
            done = self.stored[BM25] - base
            self._unstored_parts = [unstored.slice(done, len(unstored))]
        return len(objects)

    def restated_chunks(self, spans, tokens) -> dict[str, bytes]:
        """The stored chunks whose keys the token ``spans`` [a, b) reach, computed again from
        ``tokens(a, b)`` (the tokens as a redaction leaves them): a forget commits them with
        the redaction, so no kept version's index holds a word of what was forgotten. A
        block's words depend on the tokens after it (``EXTEND``) and a dense key on its
        context, so the blocks before a span count too."""
        b = self.tree.block
        ctx = self.dense_spec.context if self.dense_name else 0
        win = max(b, self.dense_spec.window if self.dense_name else b)  # keys per forward row
        blocks = [
            (max(0, (a - EXTEND) // win * win // b), -(-(z + ctx) // win) * win // b)
            for a, z in spans
        ]
        out = {}
        for kind in self.chunk_kinds:
            for first, stop, name in self._chunks(kind):
                if not any(x < stop and first < y for x, y in blocks):
                    continue
                if kind == BM25:
                    ids = tokens(first * b, stop * b + EXTEND)
                    n = (stop - first) * b
                    bt = block_terms(self._decode, ids[:n], b, following=ids[n:])
                    arrays = bt.to_arrays()
                else:
                    ctx = tokens(max(0, first * b - self.dense_spec.context), first * b)
                    keys = self.dense_spec.keys(
                        self.base, tokens(first * b, stop * b), ctx, block=b
                    )
                    arrays = {"keys": np.asarray(keys).astype(np.float16)}
                buf = io.BytesIO()
                np.savez_compressed(buf, **arrays)
                out[name] = buf.getvalue()
        return out

    # -- incremental build --------------------------------------------------------------------

    def _decode(self, ids) -> str:
        return self.base.tokenizer.decode([int(i) for i in ids], skip_special=True)

    def update(self) -> None:
        """Index every block committed since the last update."""
        t, b = self.tree, self.tree.block
        if self.kind == Keys.GIST:
            n1 = t.num_nodes(1)
            for s in range(self.dense.count(1), n1, 8192):
                self.dense.add(1, _f32(t.gists(1, s, min(n1, s + 8192))) - self.mean)
            return
        if self.lex is not None:
            ready = self.ready()
            for s in range(len(self.lex), ready, 4096):  # bounded memory for huge first builds
                e = min(ready, s + 4096)
                ids = t.tokens(s * b, e * b + EXTEND)
                bt = block_terms(self._decode, ids[: (e - s) * b], b, following=ids[(e - s) * b :])
                self.lex.add(bt)
                if t.mode != "r":  # persist() stores these; a reader never does
                    self._unstored_parts.append(bt)
        if self.dense is not None:
            # Contextual keys are a pure function of the committed tokens only if every
            # forward row covers the same window whatever the history of appends: rows start
            # at multiples of the window, so only whole windows are keyed (the newest partial
            # window waits; its words are in the lexical index already). Static keys have a
            # window of one block.
            per = max(1, self.dense_spec.window // b)
            ready = (self.ready() // per) * per
            for s in range(self.dense.count(1), ready, 4096 // per * per):
                e = min(ready, s + 4096 // per * per)
                ids = t.tokens(s * b, e * b)
                ctx = t.tokens(max(0, s * b - self.dense_spec.context), s * b)
                self.dense.add(1, self.dense_spec.keys(self.base, ids, ctx, block=b), unit=True)

    # -- use ----------------------------------------------------------------------------------

    def search(
        self,
        query_ids,
        query_vecs: torch.Tensor | None = None,
        k: int = 8,
        min_coverage: float | None = None,
    ) -> list[Hit]:
        """The ``k`` best level-1 blocks for a query. BM25 scores are returned as they are;
        hybrid hits are BM25's and the meaning keys' interleaved (``retrieval.interleave``),
        with a score that falls with the merged rank and what found each. ``min_coverage``:
        this call's share cut (``lexical_covered``) instead of the index's."""
        text = self._decode(query_ids)
        if self.kind == BM25:
            return [Hit(1, i, s) for i, s in self.lexical(query_terms(text), k, min_coverage)]
        if self.kind == Keys.GIST:
            v = query_vecs.numpy() - self.mean
            return [Hit(1, i, s) for i, s in self.dense.search(v.mean(0), k)]
        terms = query_terms(text)
        lex, covered = self.lexical_covered(terms, k, min_coverage)
        if lex and covered >= WORDS_SUFFICE:
            return [Hit(1, i, s) for i, s in lex]
        ids = [int(i) for i in query_ids]
        meaning = self.dense.search(self.dense_spec.query(self.base, ids), k) if ids else []
        meaning = [(i, s) for i, s in meaning if s >= MIN_SIMILARITY]
        return [Hit(1, i, s, via) for i, s, via in interleave(lex, meaning)[:k]]

    def lexical(
        self, terms: QueryTerms, k: int, min_coverage: float | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` best word hits (``lexical_covered`` without the share)."""
        return self.lexical_covered(terms, k, min_coverage)[0]

    def lexical_covered(
        self, terms: QueryTerms, k: int, min_coverage: float | None = None
    ) -> tuple[list[tuple[int, float]], float]:
        """BM25 over block words plus a title field: a block whose segment's source name holds
        query words ("Who is the author of argparse?" in ``docs/argparse.py``) gains their idf,
        as BM25F weighs a document's title. ``lexical_covered`` also returns the share of the
        query's idf that the best hit covers. A block whose words and title cover less than
        ``min_coverage`` of the query's idf is no hit: it shares only the query's common
        words (a statement like "remember: my codename is X" matches nothing in the documents)."""
        blocks, sc, got = self.lex.scores(terms, matched=True)
        if not len(blocks):
            return [], 0.0
        segs, starts = self._segment_starts()
        at = np.clip(np.searchsorted(starts, blocks * self.tree.block, "right") - 1, 0, None)
        idfs = self.lex.idf(terms)
        per_source: dict[str, float] = {}
        seg_ids, inv = np.unique(at, return_inverse=True)  # only segments that hold candidates
        for j in seg_ids.tolist():
            if segs[j].source not in per_source:
                per_source[segs[j].source] = self._title_bonus(segs[j].source, terms, idfs)
        bonus = np.asarray([per_source[segs[j].source] for j in seg_ids.tolist()], np.float32)[inv]
        sc = sc + TITLE_WEIGHT * bonus
        share = (got + bonus) / max(float(idfs.sum()), 1e-9)
        cut = self.min_coverage if min_coverage is None else min_coverage
        if cut:
            keep = share >= cut
            blocks, sc, share = blocks[keep], sc[keep], share[keep]
        top = np.argsort(-sc, kind="stable")[:k]
        covered = float(share[top[0]]) if len(top) else 0.0
        return [(int(blocks[i]), float(sc[i])) for i in top], covered

    def match_weight(self, text: str, terms: QueryTerms) -> float:
        """The summed idf of the query's words (any of their forms) found in ``text``."""
        if self.lex is None or not len(terms):
            return 0.0
        have = set(term_ids(words(text)).tolist())
        return float(self.lex.idf(terms)[terms.found(have)].sum())

    def _segment_starts(self):
        """The tree's segments and their start tokens, extended as segments are appended."""
        segs = self.tree.segments()
        if len(self._starts) != len(segs):
            old = len(self._starts)
            self._starts = np.concatenate(
                [self._starts[: max(0, old - 1)], [sg.start for sg in segs[max(0, old - 1) :]]]
            ).astype(np.int64)
        return segs, self._starts

    def memory_bytes(self) -> int:
        """What the loaded index holds in memory (postings, block lengths, dense keys)."""
        n = 0
        if self.lex is not None:
            n += self.lex.postings * 16 + len(self.lex) * 4  # term, block, tf; length per block
        if self.dense is not None:
            n += self.dense.count(1) * self.dense.dim * 4
        return n

    def _title_bonus(self, source: str | None, terms: QueryTerms, idfs: np.ndarray) -> float:
        if not source:
            return 0.0
        if source not in self._titles:
            self._titles[source] = set(term_ids(words(source)).tolist())
        return float(idfs[terms.found(self._titles[source])].sum())

    def boosts(self, wc: WorkingContext, hits: list[Hit]) -> np.ndarray:
        """+boost on every entry whose span meets a level-1 hit (or its neighbours): coarser
        entries get expanded, finer ones (already detailed) are protected from being collapsed
        to pay for other expansions."""
        out = np.zeros(wc.cost)
        hits = sorted((h for h in hits if h.level == 1), key=lambda h: -h.score)
        if not hits:
            return out
        b = wc.block
        starts = np.asarray(wc.starts())
        ends = starts + np.asarray([b**lvl for lvl, _ in wc.entries])
        for rank, h in enumerate(hits):
            # a fact often straddles a block boundary: bring the neighbours in as well
            s, e = (h.index - 1) * b, (h.index + 2) * b
            meet = (starts < e) & (ends > s)
            out[meet] += self.boost * (1.0 - 0.1 * rank)
        return out


def _f32(a: np.ndarray) -> np.ndarray:
    from mcruntime.streaming import to_tensor

    return to_tensor(a).numpy()
