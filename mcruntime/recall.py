"""Which hits a question gets, and which raw passages are read back right before it.

Policy on top of the index (``mcruntime.indexing``): hits in the model's own earlier answers
count ``assistant_weight`` as much and are recalled only when nothing else matches (they are
what was said, not a source of facts); hits below ``hit_ratio`` of the best are dropped; a
passage is the hit's block with its neighbours, but never past the segment (turn) the hit
belongs to; passages go weakest first, so the best sits right before the question, where the
135M model reads best (``bench/results/memory_dev_sweeps.md``).
"""

from __future__ import annotations

from mcruntime.layout import recall_ids
from mcruntime.lexical import query_terms
from mcruntime.render import ASSISTANT, ASSISTANT_SOURCE, USER, is_chat

USER_SAID, ASSISTANT_SAID = "The user said: ", "You answered: "


class Recaller:
    """Search and recall for one session's tree, index, tokenizer and ``SessionConfig``."""

    def __init__(self, tree, index, tokenizer, config):
        self.tree, self.index, self.tok, self.config = tree, index, tokenizer, config

    def search(
        self, query_ids: list[int], query_vecs=None, k: int | None = None, pool: bool = False
    ) -> list:
        """``k`` hits for a query (default ``retrieval_k``), best first, weighted and filtered
        as the module says. ``pool``: candidates for a text reader's passages, which
        ``reading.choose`` ranks and cuts as whole passages, so no hit is cut for covering
        little of the question's words: a chat turn that answers often shares one word of a
        long question (LoCoMo dev, 384 tokens shown: evidence turns 0.53 → 0.57 with 24 hits;
        BM25 over whole turns in the same tokens: 0.54). The ``hit_ratio`` cut stays: without
        it the near duplicates of the asked fact ("the red locker" for "the blue locker")
        reached the reader.
        """
        k = k or self.config.retrieval_k
        hits = self.index.search(query_ids, query_vecs, k, min_coverage=0.0 if pool else None)
        if self.config.assistant_weight != 1.0:
            for h in hits:
                if self.said_by_assistant(h.index):
                    h.score *= self.config.assistant_weight
        hits.sort(key=lambda h: -h.score)
        if hits and self.config.hit_ratio:
            hits = [h for h in hits if h.score >= self.config.hit_ratio * hits[0].score]
        return hits

    def terms(self, query: str):
        """The question's content words, as the index hashes them."""
        return query_terms(query)

    def said_by_assistant(self, block: int) -> bool:
        b, t = self.tree.block, self.tree
        first = t.segment_at(block * b)
        last = t.segment_at(min(t.length, (block + 1) * b) - 1)
        return first.source == last.source == ASSISTANT_SOURCE

    def section(
        self, hits: list, raw_from: int, room: int | None = None, query: str | None = None
    ) -> tuple[list[int], list[dict]]:
        """The recall section for these hits: the ``recall_k`` best hits as passages, merged
        where they meet, weakest first. Hits inside the raw recent tail (from ``raw_from``)
        are skipped: that text already sits right before the question. With ``room``
        positions at most, the weakest passages are left out first."""
        cfg = self.config
        if not cfg.recall_k or not hits:
            return [], []
        terms = query_terms(query) if query else None
        if cfg.assistant_weight < 1.0:  # the model's own words are no source while others match
            others = [h for h in hits if not self.said_by_assistant(h.index)]
            hits = others or hits
        spans = self.spans(hits[: cfg.recall_k], raw_from, terms)
        spans.sort(key=lambda sp: sp[2])
        while spans and room is not None and self._length(spans) > room:
            spans.pop(0)
        report = [
            {"start": s, "stop": e, "score": round(float(sc), 3),
             "source": self.tree.segment_at(s).source, "via": via}
            for s, e, sc, via in spans
        ]  # fmt: skip
        return recall_ids(self.tok, [self.passage_ids(s, e) for s, e, _, _ in spans]), report

    def spans(self, hits: list, raw_from: int, terms=None) -> list[list]:
        """``[start, stop, score, via]`` of the hits' passages, in hit order, merged where they
        overlap or touch (one passage, the better hit's score; found by "words" when any of its
        hits was)."""
        spans: list[list] = []
        for h in hits:
            s, e = self.passage(h.index, raw_from, terms)
            if e <= s:
                continue
            for sp in spans:
                if s <= sp[1] and e >= sp[0]:
                    sp[0], sp[1], sp[2] = min(sp[0], s), max(sp[1], e), max(sp[2], h.score)
                    if h.via != "meaning":
                        sp[3] = "words"
                    break
            else:
                spans.append([s, e, h.score, "meaning" if h.via == "meaning" else "words"])
        return spans

    def exchanges(self, spans: list[list], raw_from: int) -> list[list]:
        """``spans`` with each chat passage run on through the turn that follows it (its
        reply), where no passage holds that turn already and it ends before ``raw_from``. A
        reply is often the answer while the words asked for are in the turn it replies to
        ("Any pets?" / "Yup, Oscar, my guinea pig"): ranked by its own words, such an evidence
        turn was seldom shown, and shown alone, the reader did not know what it answered
        (LoCoMo dev, docs/memory.md). Only the reply's first blocks are taken, as a hit's
        passage would be."""
        t = self.tree
        out = [list(sp) for sp in spans]
        width = self._width()
        for sp in out:
            seg = t.segment_at(sp[0])
            if not is_chat(seg.source) or sp[1] != seg.stop or seg.stop >= raw_from:
                continue
            nxt = t.segment_at(seg.stop)
            if is_chat(nxt.source) and not any(a < nxt.stop and e > nxt.start for a, e, *_ in out):
                sp[1] = min(nxt.stop, nxt.start + width, raw_from)
        return out

    def replied_to(self, start: int) -> tuple[int, int] | None:
        """The end of the chat turn right before the chat turn holding ``start`` (as many
        blocks as a hit's passage: :meth:`exchanges`' width): what that turn replies to. None
        for a document or the first turn."""
        t = self.tree
        seg = t.segment_at(start)
        if not is_chat(seg.source) or seg.start == 0:
            return None
        prev = t.segment_at(seg.start - 1)
        if not is_chat(prev.source):
            return None
        return max(prev.start, seg.start - self._width()), seg.start

    def _width(self) -> int:
        """Tokens of a hit's passage: its block and ``recall_neighbours`` blocks each side."""
        return (2 * self.config.recall_neighbours + 1) * self.tree.block

    def _length(self, spans) -> int:
        return len(recall_ids(self.tok, [self.passage_ids(s, e) for s, e, _, _ in spans]))

    def passage(self, block: int, raw_from: int, terms=None) -> tuple[int, int]:
        """Tokens read back for a hit: the block with ``recall_neighbours`` blocks on each side
        (a sentence often straddles a block boundary), but only within the segment the hit
        belongs to. A block holding several segments (short chat turns) is narrowed to the one
        whose words match the question best: a hit on "my sister is called X" must not bring
        the neighbouring turns' facts of the same form, which a small model confuses with the
        one asked."""
        b, k, t = self.tree.block, self.config.recall_neighbours, self.tree
        s, e = block * b, min(t.length, (block + 1) * b)
        first, last = t.segment_at(s), t.segment_at(e - 1)
        if first.start != last.start and terms is not None and self.index is not None:
            segs = [first]
            while segs[-1].stop < e:
                segs.append(t.segment_at(segs[-1].stop))
            best = max(
                segs,
                key=lambda sg: self.index.match_weight(
                    self._decode(t.tokens(max(sg.start, s - k * b), min(sg.stop, e + k * b))),
                    terms,
                ),
            )
            first = last = best
        lo = max(0, s - k * b, first.start)
        hi = min(t.length, e + k * b, last.stop, raw_from)
        return lo, hi

    def passage_ids(self, s: int, e: int) -> list[int]:
        """A passage as the model reads it; with ``recall_roles="plain"`` chat turns say who
        spoke in words ("The user said: …"): raw "User: …" lines made the model continue the
        transcript instead of answering (dev: 13/16 chat probes in words, 8/16 raw)."""
        ids = self.tree.tokens(s, e).tolist()
        if self.config.recall_roles != "plain" or not is_chat(self.tree.segment_at(s).source):
            return ids
        lines = self._decode(ids).split("\n")
        for role, said in ((USER, USER_SAID), (ASSISTANT, ASSISTANT_SAID)):
            lines = [said + ln[len(role) :] if ln.startswith(role) else ln for ln in lines]
        return self.tok.encode("\n".join(lines))

    def _decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special=True)
