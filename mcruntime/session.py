"""Sessions: ingest → assemble → refocus → decode, with every turn appended to the tree.

The model's sequence is ``[chat prefix] [working context over the tree] [current turn]``: the
memory sits inside the user turn (see ``mcruntime.layout``), the question and the answer being
written form the raw tail.
Questions and answers are appended to the tree (as ``chat:user`` / ``chat:assistant`` segments)
so a conversation continues across processes and machines.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

import mcmodels
import mcstore
from mcmodels.decoding import DecodeConfig, Guard, trim, visible
from mcmodels.defaults import ANSWER_WEIGHTS
from mcruntime.attribution import Misattributed, check, named, speaker_of, weigh_turns
from mcruntime.binding import (
    check_binding,
    gister_id,
    gistnet_binding,
    retrieval_kind,
    session_binding,
)
from mcruntime.context import Entry, min_cost
from mcruntime.dates import dated, said_on
from mcruntime.errors import ContextError, InputError, SessionError, StaleGists, WindowError
from mcruntime.focus import RAW_RECENT, Focus, FocusConfig, raw_recent_for
from mcruntime.forget import (
    FORGOTTEN_OBJECT,
    ForgetRule,
    Forgotten,
    edits_for,
    find_spans,
    forgotten_log,
    logged_with,
    tokens_after,
)
from mcruntime.hooks import NO_HOOKS, Hooks
from mcruntime.indexing import NodeIndex
from mcruntime.inherit import Inherited
from mcruntime.layout import chat_layout
from mcruntime.picture import FocusPicture
from mcruntime.reading import (
    Passage,
    Reading,
    choose,
    expansion_messages,
    messages,
    turn_text,
    when_said,
)
from mcruntime.recall import Recaller
from mcruntime.render import Role, is_chat, render_document, render_turn, role_of
from mcruntime.retrieval import Keys
from mcruntime.scorers import FocusView, LensScorer, make_scorer
from mcruntime.streaming import EntryVectors, Gister
from mcruntime.turn import Answer, Turn, TurnStream
from mcruntime.window import Window

log = logging.getLogger(__name__)


@dataclass
class SessionConfig:
    window: int = 2048  # model positions: template + working context + current turn
    raw_recent: int = RAW_RECENT  # newest tokens of the history that always stay raw
    refocus_every: int = 32  # tokens decoded between refocus steps
    max_expands: int = 4  # expands per refocus step
    focus_rounds: int = 8  # refocus rounds before answering (one level of drill-down each)
    decode_tau: float = 0.9  # while decoding only strong wants (retrieval hits) edit the focus
    scorer: str | None = None  # None: lensnet when a checkpoint is available, else recency
    # key kind of the retrieval assist: bm25 (words), hybrid (words + static meaning keys,
    # mcruntime.static_keys: what a new tree gets), gist; "auto": the kind the tree was
    # created with (recorded in its binding; bm25 for trees that recorded none, hybrid for a
    # new tree); None: no retrieval
    retrieval: str | None = "auto"
    retrieval_k: int = 8  # level-1 hits asked of the index per question
    hit_ratio: float = 0.5  # hits scoring below this fraction of the best are no hits
    hit_coverage: float = 0.35  # a hit holds at least this share of the question's word weight
    assistant_weight: float = 0.5  # hit scores in the model's own answers count this much
    recall_k: int = 3  # best hits read back raw right before the question (0: none)
    recall_neighbours: int = 1  # blocks on each side of a recalled hit
    recall_roles: str = "plain"  # chat passages with roles in words ("plain") or as stored ("raw")
    memory_budget: int | None = 512  # cap on the working context's positions (None: the window)
    instruction: str | None = None  # text before the memory (None: mcruntime.layout's default)
    reserve: int = 640  # positions kept for the turn (recall + question + answer), <= window/3
    decoding: DecodeConfig = field(default_factory=DecodeConfig)  # stop and repetition guards
    # text readers (mcruntime.reading): candidate passages kept when their best sentence
    # window matches the question at least this fraction of the best one's
    keep_ratio: float = 0.5
    # what a text reader is shown (its context is its own, not the window's); LoCoMo dev, 40
    # questions: 3 passages of 8 hits F1 0.36 (7.6 s a question), 8 of 16 (keep_ratio 0.5)
    # 0.40 (12.3 s), 12 of 24 0.40 on one conversation (18.8 s); keep_ratio 0.75 with 12 of
    # 16 in 384 tokens 0.37: passages that match less of the question still answer it
    # hits a question asks of the index (the passages' pool; LoCoMo dev, categories 1-4,
    # evidence turns shown in 384 tokens: 16 hits 0.553, 24 0.570, 32 0.568)
    read_hits: int = 24
    read_k: int = 8  # passages shown at most
    read_tokens: int | None = 384  # and only as many as fit in this many tokens (the best always)
    reword: bool = True  # a text reader rewords a question whose own words find nothing
    # a question about one named speaker that only another's words answer is answered "my
    # memory holds nothing about that for X" without the reader (mcruntime.attribution)
    check_attribution: bool = True
    answer_weights: str = ANSWER_WEIGHTS  # the keeper's weights when it answers (BaseLM.answering)
    # a refocus keeps the cached positions of the entries it did not change, moved to their new
    # positions, instead of recomputing everything after its first edit (mcruntime.window;
    # memory bench dev, 216 keeper probes: 154 right against 144 recomputing; docs/memory.md)
    shift_cache: bool = True
    # with shift_cache: a run of the turn that repeats positions already in the window (a
    # recalled passage the focus also expanded in place) takes their keys and values, moved,
    # instead of being computed again (mcruntime.window; measured in docs/memory.md)
    copy_cache: bool = True


class Session:
    """A frozen model reading an unbounded tree through a fixed window.

    ``tree``: an open ``mcstore`` tree or a URL (created on first use, bound to the model).
    ``model``: a name or path for ``mcmodels.load_base``, or a loaded base model.
    ``window``: positions of the model's window; None keeps ``config.window`` (the caller's
    config is copied, never changed). ``reader``: who writes the answers: ``"keeper"`` (the
    tree's own model reading its token/gist window), a reader name or ``.gguf`` path for
    ``mcmodels.load_reader`` (a text reader shown the recalled passages, the recent tail and
    the question; ``mcruntime.reading``), or a loaded reader. ``hooks``: where the session and its window report the
    spans of their work (``mcruntime.hooks``; ``Timings`` records them); see ``set_hooks``.
    """

    def __init__(
        self,
        tree,
        *,
        model=mcmodels.DEFAULT_MODEL,
        gistnet=None,
        lensnet=None,
        window: int | None = None,
        storage_options: dict | None = None,
        config: SessionConfig | None = None,
        mode: str = "a",
        create: bool = True,
        hooks: Hooks = NO_HOOKS,
        reader=mcmodels.KEEPER,
    ):
        config = config or SessionConfig()
        self.config = dataclasses.replace(
            config, window=window if window is not None else config.window
        )
        self.hooks = hooks
        self.turn = Turn()  # the newest question and what its answer was made from
        self.base = mcmodels.load_base(model) if isinstance(model, str) else model
        self.reader = mcmodels.load_reader(reader) if isinstance(reader, str) else reader
        gistnet = mcmodels.pick_gistnet(self.base, gistnet, untrained_ok=True)
        if lensnet is None and self.config.scorer in (None, "lensnet"):  # only if it scores
            lensnet = mcmodels.default_lensnet(self.base)
        self.tree, self.created = self._open_tree(tree, gistnet, storage_options, mode, create)
        self.gister = Gister.for_tree(self.base, gistnet, self.tree)
        scorer = self.config.scorer or ("lensnet" if lensnet is not None else "recency")
        self.scorer = make_scorer(scorer, lensnet=lensnet)
        self.parts = chat_layout(self.base.tokenizer, self.config.instruction)
        self.window = Window(
            self.base.answering(self.config.answer_weights),
            self.parts.prefix,
            hooks=hooks,
            shift=self.config.shift_cache,
            copy=self.config.copy_cache,
        )
        self._open_reading()

    def _open_reading(self) -> None:
        """The index, recall and focus over the tree as committed (at open, and after a
        forget changed tokens that they had read)."""
        kind = self.retrieval_kind(self.tree)
        with self.hooks.span("index_open"):
            self.index = (
                NodeIndex(self.tree, self.base, kind=kind, min_coverage=self.config.hit_coverage)
                if kind
                else None
            )
        self.recaller = Recaller(self.tree, self.index, self.base.tokenizer, self.config)
        self.entry_vectors = EntryVectors(self.tree, self.base)
        self.focus = self._assemble(self._idle_budget())
        self.sync()

    # -- setup --------------------------------------------------------------------------------

    def set_hooks(self, hooks: Hooks) -> None:
        """Report the spans of this session's work (and its window's) to ``hooks`` from now on."""
        self.hooks = self.window.hooks = hooks

    @property
    def gistnet(self):
        """The GistNet this session gists with (its gister's)."""
        return self.gister.gistnet

    @property
    def lensnet(self):
        """The LensNet this session scores with, or None when its scorer is another one."""
        return self.scorer.lensnet if isinstance(self.scorer, LensScorer) else None

    def binding(self) -> dict:
        """What the tree records (and checks) about the models writing it, and the kind of
        retrieval keys it keeps (``mcruntime.binding``)."""
        return session_binding(
            self.base,
            self.gistnet,
            self.tree.dtype,
            self.retrieval_kind(self.tree),
            self.tree.binding,
        )

    def retrieval_kind(self, tree) -> str | None:
        """The kind of retrieval keys this session uses on ``tree`` (None: no retrieval)."""
        return retrieval_kind(self.config.retrieval, tree.binding if tree is not None else None)

    def _open_tree(self, tree, gistnet, storage_options, mode, create):
        """-> (the open tree, whether this call created it)."""
        if not isinstance(tree, str):
            t = tree
        else:
            try:
                t = mcstore.open(tree, mode, storage_options=storage_options)
            except mcstore.TreeNotFound:
                if not create or mode == "r":
                    raise
                kind = retrieval_kind(self.config.retrieval, None, new=True)
                binding = session_binding(self.base, gistnet, "float16", kind)
                try:
                    created = mcstore.create(
                        tree,
                        dim=self.base.d_model,
                        binding=binding,
                        gister_id=gister_id(binding),
                        storage_options=storage_options,
                    )
                    return created, True
                except mcstore.TreeExists:
                    # another process created it between our open and our create: use it
                    t = mcstore.open(tree, mode, storage_options=storage_options)
        if t.dim != self.base.d_model:
            raise mcstore.BindingMismatch(
                f"tree {t.url} holds {t.dim}-wide gists but {self.base.name} is "
                f"{self.base.d_model}-wide; use the model it was built with"
            )
        current = check_binding(t, gistnet_binding(self.base, gistnet, t.dtype))
        if not current and t.mode != "r":
            raise StaleGists(
                f"tree {t.url} was gisted by another GistNet "
                f"({((t.binding or {}).get('gistnet') or {}).get('id', 'unknown')}); "
                "recompute its gists with this one, or use that GistNet",
                url=t.url,
            )
        return t, False

    # -- budget & focus -----------------------------------------------------------------------

    def _budget(self, turn: int) -> int:
        room = self.config.window - len(self.parts.prefix) - turn
        cap = self.config.memory_budget
        return room if cap is None else min(room, max(cap, self._min_budget()))

    def _min_budget(self) -> int:
        n, raw = self.tree.length, self.config.raw_recent
        return min_cost(n, n, raw, self.tree.num_nodes, self.tree.block) if n else 0

    def _idle_budget(self) -> int:
        """Budget between questions: room is kept for a typical turn, not the largest one."""
        return self._budget(min(self.config.reserve, self.config.window // 3))

    def _raw_recent(self, budget: int) -> int:
        return raw_recent_for(budget, self.config.raw_recent)

    def _assemble(self, budget: int) -> Focus:
        cfg = FocusConfig(
            budget=budget, raw_recent=self._raw_recent(budget), max_expands=self.config.max_expands
        )
        n = self.tree.length
        need = min_cost(n, n, cfg.raw_recent, self.tree.num_nodes, self.tree.block)
        if need > budget:
            raise WindowError(
                f"a window of {self.config.window} leaves {budget} positions for the memory, "
                f"but its {n} tokens need at least {need}",
                window_needed=self.config.window + need - budget,
            )
        return Focus.assemble(n, self.tree.num_nodes, cfg, block=self.tree.block)

    def _set_budget(self, budget: int, question: int | None = None, answer: int = 0) -> None:
        need = min_cost(
            self.focus.wc.length,
            self.tree.length,
            self._raw_recent(budget),
            self.tree.num_nodes,
            self.tree.block,
        )
        if budget < need:
            w = self.config.window
            what = (
                f"the question ({question} tokens), its recalled passages and room for a "
                f"{answer}-token answer"
                if question is not None
                else "the prompt and the turn"
            )
            left = (
                f"take {w - budget} of the window's {w} positions, leaving {budget} positions"
                if budget > 0
                else f"need {w - budget} positions, more than the window's {w}, leaving no room"
            )
            raise WindowError(
                f"{what} {left} for the memory, which needs at least {need}",
                window_needed=w - budget + need,
                question=question,
            )
        self.focus.rebudget(budget, self._raw_recent(budget))

    def _grow_to_tree(self) -> None:
        """The tree grew (our own appends): extend the working context to cover it."""
        n_new = self.tree.length - self.focus.wc.length
        self.focus.on_commit(self.tree.num_nodes)
        if n_new <= 0:
            return
        if n_new > 4 * self.focus.config.budget:  # a bulk ingest: start from a fresh assembly
            self.focus = self._assemble(self.focus.config.budget)
        else:
            self.focus.grow(n_new)

    def sync(self, tail: torch.Tensor | None = None) -> None:
        """Bring the window's vectors in line with the working context (+ current turn ``tail``):
        after editing ``focus`` directly, before reading ``window``."""
        wc = self.focus.wc
        start = wc.dirty_from if wc.dirty_from is not None else wc.cost
        vecs = self.entry_vectors(wc.entries[start:])
        parts = [vecs] + ([tail] if tail is not None else [])
        self.window.set_from(self.window.prefix_len + start, torch.cat(parts, dim=0))
        wc.clear_dirty()
        # load-bearing: the model reads window positions as the context's entries; a mismatch
        # would answer from misplaced memory (the full vector check runs in the tests)
        want = self.window.prefix_len + wc.cost + (len(tail) if tail is not None else 0)
        if self.window.length != want:
            raise WindowError(
                f"window holds {self.window.length} positions after sync, the working context "
                f"and turn {want}: the focus and the window disagree (a bug: please report it)"
            )

    def entries_vectors(self) -> torch.Tensor:
        p = self.window.prefix_len
        return self.window.vectors[p : p + self.focus.wc.cost]

    def _scorer_scores(self, query_vecs: torch.Tensor) -> np.ndarray:
        view = FocusView(
            wc=self.focus.wc,
            vectors=self.entries_vectors(),
            query=query_vecs,
            base=self.base,
            prefix=self.window.vectors[: self.window.prefix_len],
        )
        with self.hooks.span("score"):
            raw = self.scorer(view)
        # squash into (-1, 1): a retrieval hit (boost >= 1) then always outranks the scorer's
        # preferences, whose z-scores can reach -10 for old entries
        return np.tanh(np.asarray(raw, dtype=np.float64) / 2)

    def search(
        self,
        query_ids: list[int],
        query_vecs: torch.Tensor | None = None,
        k: int | None = None,
        pool: bool = False,
    ) -> list:
        """The retrieval assist's hits for a query, best first (``mcruntime.recall``): ``k``
        of them (default ``retrieval_k``) before the weak ones are dropped (``pool``: a text
        reader's candidates, ranked as passages by ``reading.choose``; ``Recaller.search``)."""
        if self.index is None or not query_ids:
            return []
        if query_vecs is None and self.index.kind == Keys.GIST:
            query_vecs = self.base.embed(torch.tensor(query_ids, dtype=torch.long)).float()
        with self.hooks.span("retrieval"):
            return self.recaller.search(query_ids, query_vecs, k, pool)

    def find(self, query: str, k: int = 5) -> list[dict]:
        """What the memory holds on ``query``, without answering: the passages of the best
        hits (merged where they meet, within their segment), best first, as text with their
        span, source, score and what found them (words or meaning)."""
        hits = self.search(self.base.tokenizer.encode(query))
        found = self._hit_passages(hits, self.tree.length, self.recaller.terms(query))[:k]
        keys = ("start", "stop", "source", "score", "via")
        return [{**{key: p.report()[key] for key in keys}, "text": p.text} for p in found]

    def recall(
        self, hits: list, room: int | None = None, query: str | None = None
    ) -> tuple[list[int], list[dict]]:
        """The recall section's ids for these hits and a report of its passages."""
        raw_from = self.focus.wc.raw_floor(self.focus.config.raw_recent)
        return self.recaller.section(hits, raw_from, room, query)

    def refocus(
        self,
        query_ids: list[int],
        tail: torch.Tensor | None = None,
        rounds: int = 1,
        tau_expand: float | None = None,
        hits: list | None = None,
    ) -> int:
        """Up to ``rounds`` refocus steps for this query; returns the number of edits made.

        The retrieval assist searches once per call (or uses ``hits`` given). A scorer that is
        expensive to run (``per_round = False``, e.g. attention mass) scores once too; later
        rounds give the entries it never saw the score of their nearest scored ancestor (or the
        mean of their scored descendants, ``mcruntime.inherit``)."""
        with self.hooks.span("refocus", rounds=rounds, tau_expand=tau_expand) as rec:
            rec["edits"] = made = self._refocus(query_ids, tail, rounds, tau_expand, hits)
        return made

    def _refocus(self, query_ids, tail, rounds, tau_expand, hits) -> int:
        made = 0
        qv = self.base.embed(torch.tensor(query_ids, dtype=torch.long)).float()
        self.turn.hits = hits = self.search(query_ids, qv) if hits is None else hits
        if rounds <= 0:
            return 0
        scored: Inherited | None = None
        for _ in range(rounds):
            wc = self.focus.wc
            if scored is None or self.scorer.per_round:
                scores = self._scorer_scores(qv)
                scored = Inherited(wc.entries, scores, wc.block, top=self.tree.num_levels - 1)
            else:
                scores = scored(wc.entries)
            if hits:
                scores = scores + self.index.boosts(wc, hits)
            before = list(wc.entries)
            edits = self.focus.refocus(scores, tau_expand=tau_expand)
            self.prefetch_likely(scores, before)
            if not edits:
                break
            made += len(edits.ops)
            self._record(edits.expanded)
            self.sync(tail)
        return made

    def prefetch_likely(self, scores: np.ndarray, before: list[Entry]) -> None:
        """Start reading the vectors of the likely next expansions: the best-scored entries
        (``scores`` of the entries ``before`` a refocus step) still coarse after it."""
        present = set(self.focus.wc.entries)
        ranked = np.argsort(-scores)[: 4 * self.config.max_expands]
        likely = [before[i] for i in ranked if scores[i] > 0 and before[i] in present]
        likely = [e for e in likely if e[0] > 0][: self.config.max_expands]
        if likely:
            self.entry_vectors.prefetch(likely)

    def _record(self, expanded: list[Entry]) -> None:
        b = self.tree.block
        for level, index in expanded:
            self.tree.record_access(level - 1, np.arange(index * b, (index + 1) * b))

    # -- public API ---------------------------------------------------------------------------

    def ingest(self, text: str, source: str = "text", tags=()) -> int:
        """Append a document to the tree as one segment named ``source`` (gists for every
        completed node) in one commit; returns that commit's version number."""
        if not text.strip():
            raise InputError(f"nothing to ingest from {source}: the text is empty", kind="empty")
        ids = self.base.tokenizer.encode(render_document(text, source))
        return self.append_ids(ids, source=source, tags=tags, message=f"ingest {source}")

    def append_ids(
        self, ids: list[int], *, source: str, tags=(), message: str | None = None
    ) -> int:
        """Append token ids as one segment (gists for every completed node), commit, and keep
        the retrieval index and the working context current. Returns the new version."""
        with self.hooks.span("store"):
            version = self.tree.append(
                np.asarray(ids, dtype=np.int32),
                gister=self.hooks.wrap("gist", self.gister),
                source=source,
                tags=tuple(tags),
                message=message,
            )
        self._after_commit()
        return version

    def _after_commit(self) -> None:
        """Our own commit grew the tree: the index learns the new blocks (and stores its
        chunks), the working context and the window cover them."""
        if self.index is not None:
            with self.hooks.span("index"):
                self.index.update()
                self.index.persist()
        self._grow_to_tree()
        self.sync()

    def ask(self, question: str, max_new_tokens: int = 256, *, remember: bool = True) -> Turn:
        """Answer ``question`` whole: the :class:`Turn` it made (``.text`` is the answer as
        remembered, trimmed where the model ran on; the rest is what it was made from)."""
        stream = self.chat_stream(question, max_new_tokens=max_new_tokens, remember=remember)
        for _ in stream:
            pass
        return stream.turn

    def chat_stream(
        self, message: str, max_new_tokens: int = 256, *, remember: bool = True
    ) -> TurnStream:
        """Answer ``message`` from memory as a :class:`TurnStream`: iterating it yields text as
        it is decoded, then remembers both turns in the tree (``remember=False`` leaves the
        tree untouched, for evaluation). Its ``turn`` is filled by each step (hits, recall, the
        reader's prompt) and has its answer when the iteration ends; it is also the session's
        newest turn (``self.turn``), which a later forget clears."""
        self.turn = turn = Turn(question=message)
        if self.reader is not None:
            pieces = self._read_stream(turn, max_new_tokens, remember)
        else:
            pieces = self._keeper_stream(turn, max_new_tokens, remember)
        return TurnStream(turn, pieces)

    def _keeper_stream(self, turn: Turn, max_new_tokens: int, remember: bool) -> Iterator[str]:
        """The keeper's answer: the focus moved for the question, then decoding in the window."""
        t0, message = time.perf_counter(), turn.question
        q_ids, tail, made = self._focus_for(turn, max_new_tokens)
        t_focus = time.perf_counter()
        final, out, first, t_first = yield from self._decode(q_ids, tail, turn.hits, max_new_tokens)
        t_dec = time.perf_counter()
        picture = self.focus_picture(turn)
        turn.answer = Answer(final, list(out), picture.report(), {
            "focus_s": t_focus - t0, "decode_s": t_dec - t_focus, "tokens": len(out),
            "focus_edits": made, "first_token_s": (t_first or t_dec) - t0,
            "per_token_ms": _per_token_ms(t_first, t_dec, len(out)),
        }, first, turn.recall, picture)  # fmt: skip
        self.window.set_from(self.window.prefix_len + self.focus.wc.cost, tail[:0])
        self._set_budget(self._idle_budget())
        if remember:
            self.remember_turn(message, final)

    def _focus_for(self, turn: Turn, max_new_tokens: int) -> tuple[list[int], torch.Tensor, int]:
        """Search, recall and refocus for ``turn``'s question; the window then ends with the
        turn (recall + question). -> (question ids, the turn's vectors, focus edits made)."""
        message = turn.question
        q_ids = self.base.tokenizer.encode(message)
        turn.hits = hits = self.search(q_ids)
        question = self.parts.before_user + q_ids + self.parts.after_user
        room = self.config.window - len(self.parts.prefix) - len(question) - max_new_tokens
        recall, turn.recall = self.recall(hits, room - self._min_budget(), message)
        turn_ids = recall + question
        self._set_budget(self._budget(len(turn_ids) + max_new_tokens), len(q_ids), max_new_tokens)
        self.sync()
        tail = self.base.embed(torch.tensor(turn_ids, dtype=torch.long)).float()
        made = self.refocus(q_ids, rounds=self.config.focus_rounds, hits=hits)
        self.sync(tail)
        return q_ids, tail, made

    def _decode(self, q_ids: list[int], turn: torch.Tensor, hits: list, max_new_tokens: int):
        """Greedy decoding in the window after ``turn`` (its vectors), yielding what can be
        shown as it comes, with a refocus every ``refocus_every`` tokens that keeps ``hits``
        protected. -> (the trimmed answer, its token ids, the first logits, when they came)."""
        tok = self.base.tokenizer
        guard = Guard(self.config.decoding)
        out, text, first, t_first = guard.out, "", None, None
        ends = set(self.parts.end_ids) | set(tok.end_ids)
        for step in range(max_new_tokens):
            logits = self.hooks.on_logits(self.window.logits())
            if first is None:
                first, t_first = logits, time.perf_counter()
            nxt = guard.pick(logits)
            if nxt in ends:
                break
            guard.push(nxt)
            new_text = tok.decode(out, skip_special=True)
            if guard.done(new_text):
                break
            if not new_text.endswith("\ufffd"):
                safe = visible(new_text, self.config.decoding.stop_lines)
                if len(safe) > len(text) and safe.startswith(text):
                    yield safe[len(text) :]
                    text = safe
            self.window.append(self.base.embed(torch.tensor([nxt])).float())
            if (step + 1) % self.config.refocus_every == 0 and self.config.focus_rounds > 0:
                tail = torch.cat([turn, self.base.embed(torch.tensor(out)).float()])
                # the question's hits keep protecting what it needed; no new jumps while
                # writing (each would recompute most of the KV cache)
                self.refocus(
                    q_ids + out[-self.config.refocus_every :],
                    tail=tail,
                    tau_expand=self.config.decode_tau,
                    hits=hits,
                )
        final = trim(tok.decode(out, skip_special=True), self.config.decoding.stop_lines)
        shown = text.lstrip()  # leading blank lines were streamed as they came; final has none
        if len(final) > len(shown) and final.startswith(shown):
            yield final[len(shown) :]
        return final, out, first, t_first

    def passages(self, hits: list, query: str, raw_from: int | None = None) -> list[Passage]:
        """Every hit's passage as text (merged where they meet, inside its segment, before the
        conversation shown as recent, which starts at ``raw_from``: ``_recent_chat``'s when
        None), chosen for a text reader by ``mcruntime.reading.choose``."""
        if not hits or self.index is None or not self.config.read_k:
            return []
        terms = self.recaller.terms(query)
        if raw_from is None:
            raw_from, _ = self._recent_chat()
        return choose(
            self._hit_passages(hits, raw_from, terms),
            lambda text: self.index.match_weight(text, terms),
            self.config.read_k,
            self.config.keep_ratio,
            self.config.read_tokens,
            lambda text: len(self.base.tokenizer.encode(text)),
        )

    def _hit_passages(self, hits: list, raw_from: int, terms) -> list[Passage]:
        """The hits' passages (``Recaller.spans``: merged, within their segment, before
        ``raw_from``) as text, in hit order; a chat turn's relative times ("yesterday") with
        the dates they mean (``mcruntime.dates``)."""
        out = []
        chat = None
        tok = self.base.tokenizer
        spans = self.recaller.exchanges(self.recaller.spans(hits, raw_from, terms), raw_from)
        for s, e, score, via in spans:
            seg = self.tree.segment_at(s)
            text = tok.decode(self.recaller.passage_ids(s, e), skip_special=True)
            before, before_from = "", None
            if is_chat(seg.source):
                text = dated(text, said_on(seg.time))
                if (prev := self.recaller.replied_to(s)) is not None:
                    before = tok.decode(self.tree.tokens(*prev).tolist(), skip_special=True)
                    before_from = prev[0] if prev[1] == s else None
            role = role_of(seg.source)
            if role == Role.ASSISTANT:  # an exchange the user answered is the user's evidence
                role = role_of(self.tree.segment_at(e - 1).source)
            p = Passage(s, e, float(score), seg.source, text, str(role), via=via,
                        replies_to=before, replies_from=before_from)  # fmt: skip
            if p.kind != "document":
                if chat is None:  # the chat turns' starts, once per question
                    chat = [g.start for g in self.tree.segments() if is_chat(g.source)]
                turn = bisect.bisect_left(chat, seg.start)
                p.when = when_said(turn, len(chat), _day_if_past(seg.time))
            out.append(p)
        return out

    def _recent_chat(self) -> tuple[int, list[tuple[int, int]]]:
        """The chat turns in the raw recent tail, as token spans, and where the text a reader
        is shown as "recent" starts (the run of chat turns that ends the tree; the length when
        it ends with a document). The end of an ingested document is not shown as recent: it
        answers nothing a question asks for more often than any other part, and every token
        shown costs the reader prefill time; it is recalled like the rest instead."""
        n = self.tree.length
        start = self.focus.wc.raw_floor(self.focus.config.raw_recent) if n else 0
        spans, pos = [], start
        while pos < n:
            seg = self.tree.segment_at(pos)
            stop = min(seg.stop, n)
            if is_chat(seg.source):
                spans.append((pos, stop))
            pos = stop
        shown_from = n
        for a, b in reversed(spans):
            if b != shown_from:
                break
            shown_from = a
        return shown_from, spans

    def recent_text(self, spans: list[tuple[int, int]] | None = None) -> str:
        """The conversation in the raw recent tail (its turns' ``spans``: ``_recent_chat``'s
        when None), as text with the speaker in words."""
        if spans is None:
            _, spans = self._recent_chat()
        tok = self.base.tokenizer
        texts = [dated(tok.decode(self.tree.tokens(a, b).tolist(), skip_special=True),
                       said_on(self.tree.segment_at(a).time)) for a, b in spans]  # fmt: skip
        return turn_text("".join(texts)) if texts else ""

    def read_prompt(self, message: str) -> Reading:
        """What a text reader is shown for ``message``: the passages chosen sentence-aware,
        the recent conversation and the question, as its chat. Asks the reader only to reword
        a question whose own words find nothing; the tree and the session are untouched, so a
        benchmark can measure what is found without paying for an answer."""
        if self.reader is None:
            raise SessionError("read_prompt needs a text reader (Session(..., reader=NAME))")
        query, reworded = message, None
        # reworded when the question's own words find nothing the cuts keep (``pool`` keeps
        # chance matches on its common words, which would hide that)
        found = self.search(self.base.tokenizer.encode(message), k=self.config.read_hits)
        if not found and self.index is not None and self.config.reword:
            with self.hooks.span("reword"):
                reworded = "".join(self.reader.stream(expansion_messages(message), 32)).strip()
            if reworded:
                query = f"{message} {reworded}"
        hits = self.search(self.base.tokenizer.encode(query), k=self.config.read_hits, pool=True)
        raw_from, recent = self._recent_chat()
        chosen = self.passages(hits, query, raw_from)
        return Reading(messages(message, chosen, self.recent_text(recent)), hits, chosen, recent,
                       reworded, self._misattributed(message, chosen))  # fmt: skip

    def _misattributed(self, message: str, chosen: list[Passage]) -> Misattributed | None:
        """``mcruntime.attribution.check`` over the chat turns of the passages chosen."""
        if not self.config.check_attribution or not chosen or self.index is None:
            return None
        speakers = {n for g in self.tree.segments() if (n := speaker_of(g.source))}
        if not named(message, speakers):
            return None
        terms, said, tok = self.recaller.terms(message), [], self.base.tokenizer
        for p in chosen:
            turns, at = [], p.start
            while at < p.stop:
                seg = self.tree.segment_at(at)
                stop = min(p.stop, seg.stop)
                text = tok.decode(self.tree.tokens(at, stop).tolist(), skip_special=True)
                turns.append((speaker_of(seg.source), text))
                at = stop
            said += weigh_turns(turns, lambda text: self.index.match_weight(text, terms))
        return check(message, said, speakers)

    def _read_stream(self, turn: Turn, max_new_tokens: int, remember: bool) -> Iterator[str]:
        """A text reader's answer: ``read_prompt``'s chat, streamed from the reader."""
        t0, message = time.perf_counter(), turn.question
        reading = self.read_prompt(message)
        turn.hits, turn.recall = reading.hits, [p.report() for p in reading.passages]
        prompt, reworded = reading.prompt, reading.reworded
        t_focus = time.perf_counter()
        t_first, pieces = None, []
        # a question about one person that only another's words answer: said, not read
        said = [reading.misattributed.answer()] if reading.misattributed else None
        with self.hooks.span("read", reader=self.reader.name):
            for piece in said or self.reader.stream(prompt, max_new_tokens):
                if t_first is None:
                    t_first = time.perf_counter()
                pieces.append(piece)
                yield piece
        t_dec = time.perf_counter()
        final = trim("".join(pieces).strip(), self.config.decoding.stop_lines)
        picture = self.focus_picture(turn)
        ids = self.base.tokenizer.encode(final)
        turn.answer = Answer(final, ids, picture.report(), {
            "focus_s": t_focus - t0, "decode_s": t_dec - t_focus, "tokens": len(pieces),
            "focus_edits": 0, "first_token_s": (t_first or t_dec) - t0, "reworded": reworded,
            "per_token_ms": _per_token_ms(t_first, t_dec, len(pieces)),
            "reader": self.reader.name, "misattributed": said is not None,
            "reader_timings": {} if said else dict(self.reader.last_timings),
        }, None, turn.recall, picture)  # fmt: skip
        turn.prompt = prompt
        if remember:
            self.remember_turn(message, final)

    def forget(
        self, *, document: int | None = None, source: str | None = None, match: str | None = None
    ) -> Forgotten:
        """Forget a document (its id), the documents whose source matches a glob, or every
        occurrence of a text, in one commit (``mcruntime.forget``): from that version on the
        text is in no read, retrieval hit, recall, focus or export, and every other position
        stays valid. Older versions keep it until ``mcstore.purge``. The answers and recall
        this session last gave are dropped too."""
        try:
            rule = ForgetRule(segment=document, source=source, match=match)
        except ValueError as e:
            raise InputError(str(e), kind="forget") from None
        try:
            docs, spans = find_spans(self.tree, self.base.tokenizer, rule)
        except LookupError as e:
            raise InputError(str(e), kind="forget") from None
        done = Forgotten(rule=rule.logged(), documents=docs, spans=spans)
        done.tokens = sum(b - a for a, b in spans)
        if not spans:
            return done
        edits = edits_for(self.base.tokenizer, spans)
        objects = {}
        if self.index is not None:
            objects = self.index.restated_chunks(spans, tokens_after(self.tree, edits))
        done.version = self.tree.version + 1
        objects[FORGOTTEN_OBJECT] = logged_with(self.tree, done)
        with self.hooks.span("store"):
            done.version = self.tree.redact(
                edits,
                gister=self.hooks.wrap("gist", self.gister),
                objects=objects,
                message=f"forget {len(docs)} documents, {done.tokens} tokens",
            )
        self.turn = Turn()
        self._open_reading()
        return done

    def forgotten(self) -> list[dict]:
        """What was forgotten in this tree, oldest first (never the content)."""
        return forgotten_log(self.tree)

    def remember_turn(self, message: str, answer: str) -> int:
        """Append a user turn and the answer given to it, as two segments in one commit (a
        question is never stored without its answer). Returns the new version."""
        return self.remember_turns([("user", message), ("assistant", answer)])

    def remember_turns(self, turns, *, message: str | None = None) -> int:
        """Append chat turns ``(role, text)`` (role ``user`` or ``assistant``), one segment
        each (``chat:ROLE``), all in ONE commit: all of them are stored or none is. Keeps the
        retrieval index and the working context current as ``append_ids`` does. Returns the
        new version."""
        turns = [(role, text) for role, text in turns]
        if not turns:
            raise InputError("no turns to remember", kind="empty")
        if any(role not in ("user", "assistant") for role, _ in turns):
            raise InputError("a remembered turn is the user's or the assistant's", kind="role")
        tok = self.base.tokenizer
        parts = [
            (np.asarray(tok.encode(render_turn(role, text)), dtype=np.int32), Role(role).source, ())
            for role, text in turns
        ]
        return self.append_segments(
            parts, message=message or "chat: " + " + ".join(role for role, _ in turns)
        )

    def append_segments(self, parts, *, message: str, times=None) -> int:
        """Append segments ``(token ids, source, tags)`` in ONE commit (``times``: each one's
        wall-clock ns, as an import keeps them), keeping the index and the working context
        current as ``append_ids`` does. Returns the new version."""
        with self.hooks.span("store"):
            version = self.tree.append_many(
                parts, gister=self.hooks.wrap("gist", self.gister), message=message, times=times
            )
        self._after_commit()
        return version

    @property
    def working_context(self) -> dict:
        wc = self.focus.wc
        return {
            "entries": list(wc.entries),
            "length": wc.length,
            "cost": wc.cost,
            "budget": self.focus.config.budget,
        }

    def focus_report(self) -> list[dict]:
        """Raw spans of the focus (expanded ones, then the recent tail), one per segment."""
        return self.focus_picture().report()

    def focus_picture(self, turn: Turn | None = None) -> FocusPicture:
        """The current focus as data (``mcruntime.picture``): runs, spans, segments, and with
        ``turn`` its question and the passages recalled for it."""
        wc = self.focus.wc
        return FocusPicture.of(
            wc.entries,
            wc.length,
            raw_from=wc.raw_floor(self.focus.config.raw_recent),
            segments=self.tree.segments(),
            block=wc.block,
            budget=self.focus.config.budget,
            recall=turn.recall if turn is not None else (),
            query=turn.question if turn is not None else None,
        )

    def close(self) -> None:
        if self.tree.mode != "r":
            self.tree.flush_telemetry()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _day_if_past(time_ns: int) -> str:
    """A turn's date ("Mon 2026-12-07") when it was remembered before today, else ""."""
    day = time.strftime("%a %Y-%m-%d", time.localtime(time_ns / 1e9))
    return "" if day == time.strftime("%a %Y-%m-%d") else day


def _per_token_ms(t_first: float | None, t_end: float, n: int) -> float | None:
    """Milliseconds per token after the first (the first carries the prefill: first_token_s)."""
    return 1000 * (t_end - t_first) / (n - 1) if t_first is not None and n > 1 else None


__all__ = [
    "Answer",
    "ContextError",
    "InputError",
    "Session",
    "SessionConfig",
    "SessionError",
    "WindowError",
    "render_document",
    "render_turn",
]
