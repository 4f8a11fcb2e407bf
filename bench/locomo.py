"""LoCoMo: the memory on the benchmark its peers publish (long multi-session conversations).

LoCoMo-10 (snap-research/locomo) holds ten conversations between two people, 19-32 dated
sessions each, with ~200 questions per conversation in five categories (1 multi-hop,
2 temporal, 3 open-domain, 4 single-hop, 5 adversarial: the right answer is that the
conversation does not say; names as the data's README maps them: the mem0 paper's evaluation
code names 1 single-hop, 3 multi-hop and 4 open-domain, so compare with published tables by
category number, not name). The data is read at run time from ``../shared/locomo/locomo10.zip``
(``--data`` or ``MC_LOCOMO``) and never copied into the project. Conversations are named by
their file in the zip (``26`` … ``50``); dev split = 26 and 30 (tune here), test = the other
eight (report here).

**How a conversation is remembered.** One tree per conversation, built once and cached under
the work folder (``bench/results/tmp/locomo/``, keyed by the rendering, the model and the
GistNet): every turn of every session appended in order, one segment per turn, one commit per
session. Each turn is one line carrying its session's date and time and the speaker's name,
an image the speaker shared as its caption: ``[1:56 pm on 8 May, 2023] Caroline: I went to a
LGBTQ support group yesterday … [shares a photo of …]``. The segment's source names the
speaker (``chat:Caroline``). Why this shape makes recall work:

* the date sits *in* every turn, not in a session header: recall never reads a passage past
  the segment its hit belongs to (``mcruntime.recall``), so a header segment would never be
  shown beside the turn, and "yesterday" could not be dated;
* the speaker's name is in the text, so BM25 matches "What did Caroline research?" on the name
  and the reader knows who said it;
* not ``chat:user`` / ``chat:assistant``: a text reader is told that ``chat:user`` passages are
  what *the person asking now* said (here a third party asks about two others), and
  ``chat:assistant`` turns count half at retrieval and are dropped whenever anything else
  matches (they are the model's own words): half of the conversation would be hidden. A
  speaker-named source is read as plain evidence from both speakers alike.

**Systems**, side by side at the same window (``--window``, the keeper's positions) and with the
same reader (``--reader``: ``keeper``, the tree's own 135M model, or a text reader such as
``qwen2.5-coder-1.5b-instruct``, shown passages as text in one prompt,
``mcruntime.reading.messages``):

* ``mc``: a fresh ``mcruntime.Session`` over the tree per question, ``ask(…, remember=False)``,
  the default ``SessionConfig`` (``--set KEY=VALUE`` overrides);
* ``rag``: BM25 over the turns (each turn one document, ``mcruntime.lexical``'s scoring), the
  best turns as passages, weakest first (the best right before the question): as many as mc's
  text reader may be shown (``read_k``, or ``--rag-k``) within the same token budget
  (``read_tokens``);
* ``oracle``: the evidence turns only, in timeline order (the reader's ceiling);
* ``trunc``: the newest turns that fit the window, as the recent conversation.

**Scores**, as the LoCoMo paper's evaluation (``task_eval/evaluation.py``) computes them: token
F1 over normalised answers (lower-cased, punctuation, commas and articles a/an/the/and removed,
words Porter-stemmed: ``bench.porter``); category 1 splits both answers on commas and averages,
over the gold parts, the best F1 of any predicted part; category 3 scores against the gold's
first ``;`` part; category 5 counts 1 when the answer says the conversation does not mention it
(the paper's phrases "no information available" and "not mentioned", widened to "no
information" and to our reader's refusal "memory holds nothing"). Exact match is the paper's
(same set of normalised words). Focus recall: the share of a question's evidence turns that
were in what the system showed the reader (for ``mc``: recalled passages and the raw recent
tail, plus the expanded focus when the keeper reads; a turn counts when at least half of its
tokens were shown). Time to first token: from the question to the reader's first piece.

**Outputs.** The committed JSON (``--out``, and a ``.md`` table beside it) names each question
only by conversation and index, with the category, our answer, its scores, the evidence turns
and the turns shown (LoCoMo's ``dia_id``\\ s): anyone holding the data can audit it, and no
question, gold answer or conversation text is committed. The raw outputs (question, gold,
answer, shown turns) go to the work folder as ``<out stem>_raw.json``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import statistics
import string
import time
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from bench._common import ROOT, loadavg, machine_info
from bench.porter import stem
from mcmodels.defaults import DEFAULT_MODEL

DEV = ("26", "30")
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
ADVERSARIAL = 5  # right answer: the conversation does not say; left out of "1-4"
SYSTEMS = ("mc", "rag", "oracle", "trunc")
# category 5 is right when the answer says the conversation does not hold it: the paper's two
# phrases, "no information" (covers "no information available"), and our reader's refusal
NOT_MENTIONED = ("no information", "not mentioned", "memory holds nothing")
FORMAT = 2  # version of how turns are rendered into the tree (part of the cache key)
QUESTION_ROOM = 64  # keeper positions kept for the question when trunc fills the window
# --quick: 15 questions of each dev conversation (spread over the categories) by the systems
# that tune something; trunc (a floor, ~25 s a question: it fills the window) only in full
# runs. With the 1.5B reader ~26 s a question for the three: ~13 minutes on this machine.
QUICK_LIMIT, QUICK_SYSTEMS = 15, ("mc", "rag", "oracle")


@dataclass
class LocomoConfig:
    split: str = "test"
    conversations: tuple[str, ...] = ()  # empty: every conversation of the split
    limit: int | None = None  # N questions of each conversation (see ``pick``)
    first: bool = False  # the limit takes the first N questions, not N spread over categories
    systems: tuple[str, ...] = SYSTEMS
    reader: str = "keeper"
    window: int = 2048
    max_new_tokens: int = 48
    rag_k: int | None = None  # turns BM25 shows at most; None: as many passages as mc's reader
    model: str = DEFAULT_MODEL
    data: str | None = None  # the zip; None: MC_LOCOMO or ../shared/locomo/locomo10.zip
    out: str = "bench/results/locomo.json"
    workdir: str = "bench/results/tmp/locomo"
    session: dict = field(default_factory=dict)  # SessionConfig overrides for mc
    resume: bool = False  # reuse answers a run with the same answer key already wrote


# -- the data ------------------------------------------------------------------------------------


def data_path(path: str | None = None) -> Path:
    cands = [path, os.environ.get("MC_LOCOMO")] if path else [os.environ.get("MC_LOCOMO")]
    cands += [Path.cwd().parent / "shared/locomo/locomo10.zip"]
    cands += [ROOT.parent / "shared/locomo/locomo10.zip"]
    for c in cands:
        if c and Path(c).is_file():
            return Path(c)
    raise FileNotFoundError(
        "LoCoMo data not found: pass --data PATH/locomo10.zip or set MC_LOCOMO "
        "(expected at ../shared/locomo/locomo10.zip)"
    )


def load(path: str | Path) -> dict[str, dict]:
    """Every conversation in the zip, by its file's name (``26`` … ``50``)."""
    out = {}
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.endswith(".json"):
                out[Path(name).stem] = json.loads(z.read(name))
    return dict(sorted(out.items(), key=lambda kv: _num(kv[0])))


def _num(cid: str):
    return (0, int(cid)) if cid.isdigit() else (1, cid)


def split_ids(data: dict, split: str) -> list[str]:
    if split == "dev":
        return [c for c in data if c in DEV]
    if split == "test":
        return [c for c in data if c not in DEV]
    raise ValueError(f"split is dev or test, not {split!r}")


@dataclass
class Turn:
    dia_id: str
    session: int
    speaker: str
    text: str  # as remembered: "[date] Speaker: words [shares …]\n"
    time_ns: int  # when it was said (its session's date and time), the segment's time

    @property
    def source(self) -> str:
        return f"chat:{self.speaker}"

    @property
    def shown(self) -> str:
        """The turn as a reader is shown it (``mcruntime.dates``: "yesterday (7 May 2023)"),
        for every system alike."""
        from mcruntime.dates import dated, said_on

        return dated(self.text, said_on(self.time_ns))


def session_time(date: str, n: int) -> int:
    """A session's "1:56 pm on 8 May, 2023" in ns (local time, as segment times are read);
    a date that does not parse: day ``n`` of 2000, keeping the sessions' order."""
    try:
        when = datetime.strptime(" ".join(date.split()), "%I:%M %p on %d %B, %Y")
    except ValueError:
        when = datetime(2000, 1, 1) + timedelta(days=n)
    return int(when.timestamp() * 1e9)


def render(date: str, speaker: str, text: str, caption: str | None = None) -> str:
    line = f"[{date}] {speaker}: {' '.join(str(text).split())}"
    if caption:
        line += f" [shares {' '.join(str(caption).split())}]"
    return line + "\n"


def turns(conv: dict) -> list[Turn]:
    """The conversation's turns in order, sessions by number."""
    keys = [k for k in conv if re.fullmatch(r"session_\d+", k) and isinstance(conv[k], list)]
    out = []
    for k in sorted(keys, key=lambda k: int(k.split("_")[1])):
        n = int(k.split("_")[1])
        date = conv.get(f"{k}_date_time") or f"session {n}"
        when = session_time(date, n)
        for t in conv[k]:
            text = render(date, t["speaker"], t.get("text", ""), t.get("blip_caption"))
            out.append(Turn(t["dia_id"], n, t["speaker"], text, when))
    return out


def evidence_ids(qa: dict) -> list[str]:
    """The evidence's ``dia_id``\\ s (some entries hold several, "D8:6; D9:17")."""
    got = re.findall(r"D(\d+):(\d+)", " ".join(str(e) for e in qa.get("evidence") or ()))
    return list(dict.fromkeys(f"D{int(a)}:{int(b)}" for a, b in got))  # "D30:05" is D30:5


def pick(qa: list[dict], limit: int | None, first: bool = False) -> list[int]:
    """Indices of the questions asked: all; the first ``limit``; or (default) ``limit`` spread
    over the categories in proportion to their counts, each category's earliest first (the
    release lists questions by category, so its first 60 hold no single-hop or adversarial
    question). A spread of N holds the spread of every smaller N, so a run with a larger
    ``--limit`` and ``--resume`` only asks the questions it adds."""
    if not limit or limit >= len(qa):
        return list(range(len(qa)))
    if first:
        return list(range(limit))
    cats = Counter(q["category"] for q in qa)
    seen: Counter = Counter()
    keys = []
    for i, q in enumerate(qa):
        c = q["category"]
        keys.append(((seen[c] + 0.5) / cats[c], c, i))
        seen[c] += 1
    return sorted(i for _, _, i in sorted(keys)[:limit])


# what decides an answer besides the run's settings: a change to any of these starts that
# system's answers afresh. mc: the runtime that recalls and reads ...
ANSWER_SOURCES = ("mcruntime/reading.py", "mcruntime/recall.py", "mcruntime/lexical.py",
                  "mcruntime/indexing.py", "mcruntime/retrieval.py", "mcruntime/static_keys.py",
                  "mcruntime/layout.py", "mcruntime/dates.py", "mcruntime/session.py",
                  "mcruntime/attribution.py")  # fmt: skip
# ... a baseline: only how a reader is shown text (and BM25's scoring, for rag): these
# modules and the parts of mcruntime.reading that write a reader's prompt (not how mc
# chooses its passages)
BASELINE_SOURCES = ("mcruntime/layout.py", "mcruntime/dates.py", "mcruntime/lexical.py")
BASELINE_READING = ("SYSTEM", "TOLD", "_ASKS", "asks", "NOTHING", "Passage", "_label", "messages")
# ... and this module's parts that render, retrieve and ask (not its scoring or reporting)
ANSWER_CODE = ("render", "turns", "session_time", "Turn", "Conversation", "Answerer",
               "_reading", "QUESTION_ROOM")  # fmt: skip
SYSTEM_CODE = {"mc": ("build_tree", "_mc"), "rag": ("TurnIndex", "_baseline", "rag_k", "rag_turns"),
               "oracle": ("_baseline",), "trunc": ("_baseline",)}  # fmt: skip
_NOT_ANSWERS = ("split", "conversations", "limit", "first", "systems", "out", "workdir", "resume")


def answer_key(cfg: LocomoConfig, system: str) -> str:
    """What one system's answer to a question depends on: the run's settings (not which
    questions or systems it asks, nor where it writes), ``SessionConfig`` (for a baseline only
    the passage budget it shares with mc) and the source of the code that recalls, reads and
    asks for that system, so tuning mc's recall keeps the baselines' answers. Rows stored under
    the same key are reused by ``--resume``."""
    from mcruntime import SessionConfig

    settings = {k: v for k, v in asdict(cfg).items() if k not in _NOT_ANSWERS}
    session = asdict(SessionConfig())
    if system != "mc":  # a baseline reads only the passage budget: mc's tuning keeps its answers
        settings.pop("session")
        session = {"read_k": rag_k(cfg), "read_tokens": _reading(cfg).read_tokens}
    files = ANSWER_SOURCES if system == "mc" else BASELINE_SOURCES
    src = [(p, (ROOT / p).read_text()) for p in files if (ROOT / p).exists()]
    src += [(n, _source(globals()[n])) for n in ANSWER_CODE + SYSTEM_CODE[system]]
    if system != "mc":
        from mcruntime import reading

        src += [(f"reading.{n}", _source(getattr(reading, n))) for n in BASELINE_READING]
    blob = json.dumps([FORMAT, system, settings, session, src], sort_keys=True,
                      default=str)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _source(obj) -> str:
    return inspect.getsource(obj) if inspect.isfunction(obj) or inspect.isclass(obj) else repr(obj)


class Answers:
    """Every answer one system gave in runs under one answer key, one JSON line each,
    appended as it is made (``<workdir>/answers-<key>.jsonl``: raw, with question and gold;
    never committed), so a run that stops (or a larger one) goes on from where the last one
    got to."""

    def __init__(self, workdir: str | Path, key: str):
        self.path = Path(workdir) / f"answers-{key}.jsonl"
        self.done: dict[tuple[str, int, str], dict] = {}
        self.cut = False  # the last line was cut (the next one starts on a line of its own)
        if self.path.exists():
            text = self.path.read_text()
            self.cut = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: asked again
                    continue
                self.done[(r["conv"], r["q"], r["system"])] = r

    def get(self, cid: str, qi: int, system: str) -> dict | None:
        return self.done.get((cid, qi, system))

    def add(self, raw: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(("\n" if self.cut else "") + json.dumps(raw) + "\n")
        self.cut = False
        self.done[(raw["conv"], raw["q"], raw["system"])] = raw


# -- scores (LoCoMo's task_eval/evaluation.py) ---------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the|and)\b")
_PUNCT = set(string.punctuation)


def normalize(s) -> str:
    s = str(s).replace(",", "").lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def f1_score(pred: str, gold: str) -> float:
    p = [stem(w) for w in normalize(pred).split()]
    g = [stem(w) for w in normalize(gold).split()]
    same = sum((Counter(p) & Counter(g)).values())
    if not same:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


def f1_multi(pred: str, gold: str) -> float:
    """Category 1: the mean over the gold's comma-separated parts of the best F1 of any of the
    prediction's comma-separated parts."""
    preds = [p.strip() for p in str(pred).split(",")]
    golds = [g.strip() for g in str(gold).split(",")]
    return float(np.mean([max(f1_score(p, g) for p in preds) for g in golds]))


def exact_match(pred: str, gold: str) -> bool:
    return set(normalize(pred).split()) == set(normalize(gold).split())


def says_not_mentioned(pred: str) -> bool:
    low = str(pred).lower()
    return any(p in low for p in NOT_MENTIONED)


def gold(qa: dict) -> str:
    """The answer scored against (category 3: its first ``;`` part; category 5: none)."""
    ans = str(qa.get("answer", ""))
    return ans.split(";")[0].strip() if qa["category"] == 3 else ans


def score(pred: str, qa: dict) -> tuple[float, bool]:
    """(F1, exact match) of one answer, by the question's category."""
    if qa["category"] == ADVERSARIAL:
        ok = says_not_mentioned(pred)
        return float(ok), ok
    g = gold(qa)
    f1 = f1_multi(pred, g) if qa["category"] == 1 else f1_score(pred, g)
    return f1, exact_match(pred, g)


# -- one conversation as a tree ------------------------------------------------------------------


@dataclass
class Conversation:
    cid: str
    turns: list[Turn]
    qa: list[dict]
    ids: list[list[int]]  # keeper tokens of each turn
    spans: list[tuple[int, int]]  # each turn's tokens in the tree
    index: dict[str, int]  # dia_id -> turn
    tree: Path | None = None
    build_s: float = 0.0

    @classmethod
    def of(cls, cid: str, conv: dict, tok) -> Conversation:
        ts = turns(conv)
        ids = [tok.encode(t.text) for t in ts]
        ends = np.cumsum([0] + [len(x) for x in ids])
        spans = [(int(ends[i]), int(ends[i + 1])) for i in range(len(ts))]
        return cls(cid, ts, list(conv.get("qa") or []), ids, spans,
                   {t.dia_id: i for i, t in enumerate(ts)})  # fmt: skip

    def evidence(self, qa: dict) -> list[int]:
        return sorted({self.index[d] for d in evidence_ids(qa) if d in self.index})

    def turns_in(self, spans) -> list[int]:
        """Turns at least half of whose tokens lie inside ``spans`` (token ranges)."""
        shown = np.zeros(self.spans[-1][1] if self.spans else 0, bool)
        for s, e in spans:
            shown[max(0, s) : max(0, e)] = True
        return [i for i, (s, e) in enumerate(self.spans) if e > s and 2 * shown[s:e].sum() >= e - s]


def build_tree(conv: Conversation, work: Path, base, gistnet, lensnet) -> Path:
    """The conversation's tree, built once: one segment per turn, one commit per session,
    then the retrieval index stored. Reused while the rendering, model, GistNet and the kind
    of retrieval keys a new tree gets match."""
    import mcstore
    from mcruntime import Session, SessionConfig
    from mcruntime.binding import gistnet_binding, session_binding
    from mcruntime.streaming import Gister

    key = json.dumps(
        [FORMAT, base.name, gistnet_binding(base, gistnet, "float16"),
         session_binding(base, gistnet, "float16", None).get("retrieval"),
         [(t.source, t.text, t.time_ns) for t in conv.turns]],
        sort_keys=True, default=str,
    )  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = work / f"conv-{conv.cid}-{digest}.mc"
    mark = work / f"conv-{conv.cid}-{digest}.json"
    if mark.exists() and path.exists():
        conv.tree, conv.build_s = path, json.loads(mark.read_text())["seconds"]
        return path
    shutil.rmtree(path, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with Session(str(path), model=base, gistnet=gistnet, lensnet=lensnet,
                 config=SessionConfig(retrieval=None)):  # fmt: skip
        pass  # creates the tree, bound to the model and GistNet
    tree = mcstore.open(str(path), "a")
    gister = Gister.for_tree(base, gistnet, tree)
    for n in dict.fromkeys(t.session for t in conv.turns):
        mine = [i for i, t in enumerate(conv.turns) if t.session == n]
        parts = [(np.asarray(conv.ids[i], np.int32), conv.turns[i].source, ()) for i in mine]
        tree.append_many(parts, gister=gister, message=f"locomo {conv.cid} session {n}",
                         times=[conv.turns[i].time_ns for i in mine])  # fmt: skip
    assert tree.length == conv.spans[-1][1], "the tree does not hold the turns as rendered"
    with Session(str(path), model=base, gistnet=gistnet, lensnet=lensnet):
        pass  # builds and stores the retrieval index
    conv.tree, conv.build_s = path, time.perf_counter() - t0
    mark.write_text(json.dumps({"seconds": conv.build_s, "tokens": tree.length}))
    return path


# -- the readers ---------------------------------------------------------------------------------


class Answerer:
    """Shows passages and a recent tail to the configured reader, the same way for every
    baseline: the keeper through its chat layout (``mcruntime.layout``), a text reader through
    ``mcruntime.reading.messages`` (the prompt ``mc`` uses)."""

    def __init__(self, base, reader, window: int, max_new: int):
        from mcruntime.layout import chat_layout

        self.base, self.reader, self.window, self.max_new = base, reader, window, max_new
        self.parts = chat_layout(base.tokenizer)

    def room(self) -> int:
        """Keeper positions for memory: the window less the template, a question's room and
        the answer's (fixed per run, so trunc shows the same tail for every question)."""
        p = self.parts
        fixed = len(p.prefix) + len(p.before_user) + len(p.after_user)
        return self.window - fixed - QUESTION_ROOM - self.max_new

    def answer(self, question: str, passages: list[tuple[str, str]], recent: str = ""):
        """(answer, seconds to first token) from ``passages`` ``(source, text)``, weakest
        first, and the ``recent`` conversation."""
        from mcmodels.decoding import trim

        t0 = time.perf_counter()
        if self.reader is None:
            text, first = self._keeper(question, passages, recent)
        else:
            from mcruntime.reading import Passage, messages

            ps = [Passage(0, 0, 0.0, src, txt) for src, txt in passages]
            first, pieces = None, []
            for piece in self.reader.stream(messages(question, ps, recent), self.max_new):
                if first is None:
                    first = time.perf_counter()
                pieces.append(piece)
            text = "".join(pieces)
            first = (first or time.perf_counter()) - t0
        return trim(text.strip()), first

    def _keeper(self, question, passages, recent):
        import torch

        from mcmodels.decoding import Guard
        from mcruntime.layout import recall_ids

        tok, p = self.base.tokenizer, self.parts
        rec = recall_ids(tok, [tok.encode(txt) for _, txt in passages])
        ids = p.prefix + tok.encode(recent) + rec + p.before_user + tok.encode(question)
        ids += p.after_user
        stop = set(p.end_ids) | set(tok.end_ids)
        t0 = time.perf_counter()
        guard, first = Guard(), None
        out = self.base.forward_ids(ids, last_k=1)
        pos = len(ids)
        for _ in range(self.max_new):
            nxt = guard.pick(out.logits[0, -1])
            if first is None:
                first = time.perf_counter() - t0
            if nxt in stop:
                break
            guard.push(nxt)
            if guard.done(tok.decode(guard.out, skip_special=True)):
                break
            out = self.base.forward_ids([nxt], torch.tensor([[pos]]), cache=out.cache, last_k=1)
            pos += 1
        return tok.decode(guard.out, skip_special=True), first


class TurnIndex:
    """BM25 over the turns of one conversation (each turn a document; the postings and
    scoring of ``mcruntime.lexical``)."""

    def __init__(self, conv: Conversation):
        from mcruntime.lexical import BlockTerms, LexicalIndex, term_ids, words

        offsets, terms, tfs, dls = [0], [], [], []
        for t in conv.turns:
            ws = words(t.text)
            c = Counter(ws)
            terms.append(term_ids(c.keys()))
            tfs.append(np.fromiter(c.values(), np.int64, len(c)))
            dls.append(len(ws))
            offsets.append(offsets[-1] + len(c))
        self.index = LexicalIndex()
        if conv.turns:
            self.index.add(BlockTerms(
                np.asarray(offsets, np.int64), np.concatenate(terms).astype(np.uint32),
                np.minimum(np.concatenate(tfs), 65535).astype(np.uint16),
                np.minimum(np.asarray(dls), 65535).astype(np.uint16),
            ))  # fmt: skip

    def ranked(self, question: str, k: int) -> list[int]:
        from mcruntime.lexical import query_terms

        return [i for i, _ in self.index.search(query_terms(question), k)]


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Row:
    conv: str
    q: int  # index in the conversation's qa list
    category: int
    system: str
    answer: str
    f1: float
    em: bool
    evidence: list[str]  # dia_ids
    shown: list[str]  # dia_ids of the turns the reader was shown
    found: float | None  # share of the evidence turns shown
    shown_tokens: int  # keeper tokens shown (passages and recent tail)
    first_token_s: float | None
    seconds: float
    note: str = ""


def _baseline(system, conv, qa, answerer, index, cfg):
    """(answer, first token s, turns shown) of one baseline for one question."""
    q = qa["question"]
    if system == "trunc":
        room, shown = answerer.room(), []
        for i in range(len(conv.turns) - 1, -1, -1):
            if (room := room - len(conv.ids[i])) < 0:
                break
            shown.insert(0, i)
        out, first = answerer.answer(q, [], "".join(conv.turns[i].shown for i in shown))
        return out, first, shown
    if system == "oracle":
        shown = conv.evidence(qa)
    elif system == "rag":
        shown = rag_turns(conv, index.ranked(q, rag_k(cfg)), cfg)[::-1]  # best last
    else:
        raise ValueError(f"unknown system {system!r}")
    out, first = answerer.answer(q, [(conv.turns[i].source, conv.turns[i].shown) for i in shown])
    return out, first, shown


def _reading(cfg: LocomoConfig):
    """The text reader's passage limits mc runs with (``SessionConfig`` with the overrides)."""
    from mcruntime import SessionConfig

    return SessionConfig(**cfg.session)


def rag_k(cfg: LocomoConfig) -> int:
    return cfg.rag_k if cfg.rag_k is not None else _reading(cfg).read_k


def rag_turns(conv: Conversation, ranked: list[int], cfg: LocomoConfig) -> list[int]:
    """BM25's best turns within the budget mc's text reader has (``read_tokens``): the same
    number of tokens shown, so the comparison is of what is found, not of how much is read."""
    budget, out, used = _reading(cfg).read_tokens, [], 0
    for i in ranked:
        n = len(conv.ids[i])
        if out and budget is not None and used + n > budget:
            break
        out.append(i)
        used += n
    return out


def _mc(conv, qa, cfg, base, gistnet, lensnet, reader):
    """(answer, first token s, turns shown, tokens shown, note) of a fresh Session."""
    import mcmodels
    from bench.memory import mc_shown
    from mcruntime import Session, SessionConfig

    t0 = time.perf_counter()
    sc = SessionConfig(window=cfg.window, **cfg.session)
    with Session(str(conv.tree), model=base, gistnet=gistnet, lensnet=lensnet, config=sc,
                 mode="r", reader=reader or mcmodels.KEEPER) as sess:  # fmt: skip
        t_open = time.perf_counter() - t0
        turn = sess.ask(qa["question"], max_new_tokens=cfg.max_new_tokens, remember=False)
        out, spans = turn.text, mc_shown(sess, turn)
        first = turn.answer.timings["first_token_s"]
        reworded = turn.answer.timings.get("reworded")
    mask = np.zeros(conv.spans[-1][1], bool)
    for s, e in spans:
        mask[s:e] = True
    note = f"open {t_open:.1f}s" + (f"; reworded: {reworded}" if reworded else "")
    return out, first, conv.turns_in(spans), int(mask.sum()), note


def run(cfg: LocomoConfig, *, progress=print, base=None, data=None, on_progress=None) -> dict:
    """Every question of the chosen conversations, by every system; returns the result (rows,
    raw rows, summary)."""
    import mcmodels

    data = data if data is not None else load(data_path(cfg.data))
    cids = list(cfg.conversations) or split_ids(data, cfg.split)
    missing = [c for c in cids if c not in data]
    if missing:
        raise KeyError(f"no conversation {missing} in the data (has {list(data)})")
    base = base or mcmodels.load_base(cfg.model)
    reader = None if cfg.reader == mcmodels.KEEPER else mcmodels.load_reader(cfg.reader)
    gistnet = mcmodels.pick_gistnet(base, None, untrained_ok=True)
    lensnet = mcmodels.default_lensnet(base)
    answerer = Answerer(base, reader, cfg.window, cfg.max_new_tokens)
    work = Path(cfg.workdir)
    answers = {s: Answers(work, answer_key(cfg, s)) for s in cfg.systems} if cfg.resume else None
    machine = machine_info()
    t_start, cpu_start = time.perf_counter(), time.process_time()
    rows: list[Row] = []
    raw: list[dict] = []
    builds: dict[str, dict] = {}

    def result():
        return _result(cfg, base, machine, rows, raw, builds, t_start, cpu_start)

    for cid in cids:
        conv = Conversation.of(cid, data[cid], base.tokenizer)
        asked = pick(conv.qa, cfg.limit, cfg.first)
        if "mc" in cfg.systems:
            build_tree(conv, work, base, gistnet, lensnet)
        builds[cid] = {"turns": len(conv.turns), "tokens": conv.spans[-1][1] if conv.spans else 0,
                       "build_s": round(conv.build_s, 1), "questions": len(asked)}  # fmt: skip
        index = TurnIndex(conv)
        # one system at a time: a text reader's prompt cache then reuses what questions share
        for system in cfg.systems:
            for qi in asked:
                qa = conv.qa[qi]
                kept = answers[system].get(cid, qi, system) if answers else None
                if kept is not None:
                    rows.append(Row(**{k: kept[k] for k in Row.__dataclass_fields__}))
                    raw.append(kept)
                    continue
                t0 = time.perf_counter()
                note = ""
                if system == "mc":
                    out, first, shown, n_tok, note = _mc(
                        conv, qa, cfg, base, gistnet, lensnet, reader
                    )
                else:
                    out, first, shown = _baseline(system, conv, qa, answerer, index, cfg)
                    n_tok = sum(len(conv.ids[i]) for i in shown)
                f1, em = score(out, qa)
                ev = conv.evidence(qa)
                found = len(set(ev) & set(shown)) / len(ev) if ev else None
                row = Row(cid, qi, int(qa["category"]), system, out, round(f1, 4), bool(em),
                          [conv.turns[i].dia_id for i in ev],
                          [conv.turns[i].dia_id for i in shown], found, n_tok,
                          None if first is None else round(first, 3),
                          round(time.perf_counter() - t0, 3), note)  # fmt: skip
                rows.append(row)
                raw.append({**asdict(row), "question": qa["question"], "gold": gold(qa),
                            "adversarial_answer": qa.get("adversarial_answer")})  # fmt: skip
                if answers is not None:
                    answers[system].add(raw[-1])
            done = [r for r in rows if r.conv == cid and r.system == system]
            progress(
                f"conversation {cid} {system:>6}: F1 {np.mean([r.f1 for r in done]):.3f} "
                f"over {len(done)} questions, {sum(r.seconds for r in done):.0f}s"
            )
            if on_progress is not None:
                on_progress(result())
    return result()


def _result(cfg, base, machine, rows, raw, builds, t_start, cpu_start) -> dict:
    out = {
        "config": asdict(cfg),
        "model": base.name,
        "reader": cfg.reader,
        "machine": {**machine, "loadavg_end": loadavg()},
        "seconds": time.perf_counter() - t_start,
        "cpu_seconds": time.process_time() - cpu_start,
        "conversations": builds,
        "rows": [asdict(r) for r in rows],
    }
    out["summary"] = summarise(out["rows"])
    out["compare"] = compare(out["rows"])
    out["raw"] = raw  # not written to --out (see save)
    return out


def _cell(rs: list[dict]) -> dict:
    found = [r["found"] for r in rs if r["found"] is not None]
    firsts = [r["first_token_s"] for r in rs if r["first_token_s"] is not None]
    return {
        "n": len(rs),
        "f1": float(np.mean([r["f1"] for r in rs])) if rs else None,
        "em": float(np.mean([r["em"] for r in rs])) if rs else None,
        "found": float(np.mean(found)) if found else None,
        "first_token_s": statistics.median(firsts) if firsts else None,
        # answers saying the memory holds nothing (right in category 5 only)
        "refused": float(np.mean([says_not_mentioned(r["answer"]) for r in rs])) if rs else None,
        "seconds": float(np.mean([r["seconds"] for r in rs])) if rs else None,
    }


def summarise(rows: list[dict]) -> dict:
    """Per system: F1, EM, focus recall, median first-token time and mean seconds, per category
    (by name), over categories 1-4 (as the mem0 paper reports) and over all."""
    out: dict = {}
    for system in dict.fromkeys(r["system"] for r in rows):
        rs = [r for r in rows if r["system"] == system]
        d = {CATEGORIES[c]: _cell([r for r in rs if r["category"] == c])
             for c in CATEGORIES if any(r["category"] == c for r in rs)}  # fmt: skip
        d["1-4"] = _cell([r for r in rs if r["category"] != ADVERSARIAL])
        d["all"] = _cell(rs)
        out[system] = d
    return out


def paired(rows: list[dict], a: str, b: str, seed: int = 0, draws: int = 5000) -> dict | None:
    """``a``'s F1 minus ``b``'s over the questions of categories 1-4 both answered, with a 95%
    bootstrap interval over questions (fixed seed): a lead of a few hundredths over a few
    hundred questions is within what chance moves, and a table should say so."""
    f1 = {(r["conv"], r["q"], r["system"]): r["f1"] for r in rows if r["category"] != ADVERSARIAL}
    both = sorted({(c, q) for c, q, s in f1 if s == a} & {(c, q) for c, q, s in f1 if s == b})
    if not both:
        return None
    d = np.array([f1[(c, q, a)] - f1[(c, q, b)] for c, q in both])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (draws, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"n": len(both), "diff": float(d.mean()), "lo": float(lo), "hi": float(hi)}


def by_shown(rows: list[dict], system: str) -> dict:
    """``system``'s F1 over categories 1-4 split by how much of the evidence it showed (all,
    some, none), beside the oracle's F1 on the same questions: where the gap to the oracle is
    finding the evidence and where it is reading it among other turns."""
    oracle = {(r["conv"], r["q"]): r["f1"] for r in rows if r["system"] == "oracle"}
    out = {}
    rs = [
        r
        for r in rows
        if r["system"] == system and r["category"] != ADVERSARIAL and r["found"] is not None
    ]
    for name, test in (("all", lambda f: f >= 1), ("some", lambda f: 0 < f < 1),
                       ("none", lambda f: f <= 0)):  # fmt: skip
        g = [r for r in rs if test(r["found"])]
        o = [oracle[(r["conv"], r["q"])] for r in g if (r["conv"], r["q"]) in oracle]
        out[name] = {
            "n": len(g),
            "f1": float(np.mean([r["f1"] for r in g])) if g else None,
            "oracle_f1": float(np.mean(o)) if o and len(o) == len(g) else None,
        }
    return out


def compare(rows: list[dict]) -> dict:
    """mc against each baseline, paired (``paired``), and mc's and RAG's answers by the
    evidence they showed (``by_shown``)."""
    systems = set(r["system"] for r in rows)
    out: dict = {"paired": {}, "by_shown": {}}
    if "mc" in systems:
        for other in (s for s in SYSTEMS if s != "mc" and s in systems):
            out["paired"][other] = paired(rows, "mc", other)
    for s in ("mc", "rag"):
        if s in systems:
            out["by_shown"][s] = by_shown(rows, s)
    return out


def _f(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def compare_table(cmp: dict) -> str:
    lines = []
    if cmp.get("paired"):
        lines += ["\nmc's F1 minus each baseline's, paired over the questions of categories 1-4 "
                  "both answered (95% bootstrap interval)\n",
                  "| against | questions | mc minus it | interval |", "|---|---|---|---|"]  # fmt: skip
        for other, p in cmp["paired"].items():
            if p:
                lines.append(f"| {other} | {p['n']} | {p['diff']:+.3f} | "
                             f"{p['lo']:+.3f} to {p['hi']:+.3f} |")  # fmt: skip
    if cmp.get("by_shown"):
        lines += ["\nF1 over categories 1-4 by how much of its evidence the system showed, "
                  "beside the oracle's F1 on the same questions\n",
                  "| system | evidence shown | questions | F1 | oracle's F1 |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for s, d in cmp["by_shown"].items():
            for name, c in d.items():
                lines.append(f"| {s} | {name} | {c['n']} | {_f(c['f1'])} | {_f(c['oracle_f1'])} |")
    return "\n".join(lines)


def table(result: dict) -> str:
    summ = result["summary"]
    cols = [c for c in [*CATEGORIES.values(), "1-4", "all"] if any(c in d for d in summ.values())]
    systems = [s for s in SYSTEMS if s in summ] + [s for s in summ if s not in SYSTEMS]
    lines = []
    for key, title in (("f1", "token F1"), ("em", "exact match"),
                       ("found", "focus recall (evidence turns shown)")):  # fmt: skip
        n0 = {c: next((summ[s][c]["n"] for s in systems if c in summ[s]), 0) for c in cols}
        lines += [
            f"\n{title}\n",
            "| system | " + " | ".join(f"{c} (n={n0[c]})" for c in cols) + " |",
        ]
        lines.append("|" + "---|" * (len(cols) + 1))
        for s in systems:
            cells = []
            for c in cols:
                cell = summ[s].get(c)
                if not cell or cell[key] is None:
                    cells.append("–")
                    continue
                v = f"{cell[key]:.3f}"
                cells.append(v if cell["n"] == n0[c] else f"{v} (n={cell['n']})")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["\nseconds per question (median to first token, mean in all); share of answers "
              "saying the memory holds nothing (categories 1-4, where that is wrong)\n",
              "| system | first token s | all s | refused (1-4) |", "|---|---|---|---|"]  # fmt: skip
    for s in systems:
        a, r = summ[s]["all"], summ[s]["1-4"]
        ft = "–" if a["first_token_s"] is None else f"{a['first_token_s']:.2f}"
        ref = "–" if r["refused"] is None else f"{r['refused']:.2f}"
        lines.append(f"| {s} | {ft} | {a['seconds']:.2f} | {ref} |")
    if result.get("compare"):
        lines.append(compare_table(result["compare"]))
    return "\n".join(lines).strip()


def plot(result: dict, path: str | Path) -> None:
    """Token F1 and focus recall per category, one bar per system (the README's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = result["summary"]
    systems = [s for s in SYSTEMS if s in summ]
    cols = [c for c in [*CATEGORIES.values(), "1-4", "all"] if any(c in d for d in summ.values())]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    width = 0.8 / max(1, len(systems))
    for ax, key, title in ((axes[0], "f1", "token F1"), (axes[1], "found", "focus recall")):
        for j, s in enumerate(systems):
            vals = [(summ[s].get(c) or {}).get(key) for c in cols]
            xs = [i + (j - (len(systems) - 1) / 2) * width for i in range(len(cols))]
            ax.bar(xs, [v or 0.0 for v in vals], width, label=s)
        ax.set_xticks(range(len(cols)), [f"{c}\n(n={summ[systems[0]][c]['n']})" for c in cols],
                      fontsize=8)  # fmt: skip
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    cfg = result["config"]
    fig.suptitle(f"LoCoMo {cfg['split']} split, reader {result['reader']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save(result: dict, out: str, workdir: str | None = None) -> None:
    """The committed result (``out`` and a ``.md`` table: no question or gold text) and the raw
    outputs (``<workdir>/<out stem>_raw.json``: questions, gold answers, answers)."""
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    keep = {k: v for k, v in result.items() if k != "raw"}
    p.write_text(json.dumps(keep, indent=1))
    cfg = result["config"]
    convs = ", ".join(f"{c} ({b['questions']} q)" for c, b in result["conversations"].items())
    how = "first" if cfg.get("first", True) else "spread over the categories"
    subset = f", {cfg['limit']} questions of each ({how})" if cfg["limit"] else ""
    p.with_suffix(".md").write_text(
        f"LoCoMo, {cfg['split']} split, conversations {convs}{subset}; "
        f"keeper {result['model']}, reader {result['reader']}, window {cfg['window']}; "
        f"{result['seconds'] / 60:.0f} min, {result['cpu_seconds'] / 60:.0f} CPU-min in this run; "
        f"{sum(r['seconds'] for r in result['rows']) / 60:.0f} min of answering in all "
        f"(summed per question, over the runs `--resume` took answers from)\n\n"
        f"{table(result)}\n"
    )
    if result["rows"]:
        plot(result, p.with_suffix(".png"))
    if workdir and result.get("raw") is not None:
        w = Path(workdir)
        w.mkdir(parents=True, exist_ok=True)
        (w / f"{p.stem}_raw.json").write_text(json.dumps(result["raw"], indent=1))


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench locomo", description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="test", choices=["test", "dev"], help="dev: for tuning only")
    ap.add_argument("--quick", action="store_true",
                    help=f"dev split, {QUICK_LIMIT} questions of each, {','.join(QUICK_SYSTEMS)}")  # fmt: skip
    ap.add_argument("--conversations", default=None, help="comma-separated, e.g. 26,30")
    ap.add_argument("--limit", type=int, default=None,
                    help="N questions per conversation, spread over the categories")  # fmt: skip
    ap.add_argument("--first", action="store_true", help="--limit takes the first N questions")
    ap.add_argument("--systems", default=None, help=f"comma-separated, from {','.join(SYSTEMS)}")
    ap.add_argument("--reader", default=None, help="keeper (default) or a reader name")
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--rag-k", type=int, default=None,
                    help="turns BM25 shows at most (default: mc's read_k, within read_tokens)")  # fmt: skip
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=None, help="locomo10.zip (default ../shared/locomo/)")
    ap.add_argument("--workdir", default=None, help="trees and raw outputs (git-ignored)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="SessionConfig override for mc, e.g. recall_k=5")  # fmt: skip
    ap.add_argument("--resume", action="store_true",
                    help="reuse the answers an earlier run with the same settings and code made")  # fmt: skip
    args = ap.parse_args(argv)
    kw: dict = {"split": "dev" if args.quick else args.split, "resume": args.resume}
    if args.quick:
        kw["limit"], kw["systems"] = QUICK_LIMIT, QUICK_SYSTEMS
    kw["first"] = args.first
    for name in ("limit", "reader", "window", "max_new_tokens", "rag_k", "model", "data",
                 "workdir"):  # fmt: skip
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.conversations:
        kw["conversations"] = tuple(args.conversations.split(","))
    if args.systems:
        kw["systems"] = tuple(args.systems.split(","))
    kw["session"] = {k: json.loads(v) for k, v in (x.split("=", 1) for x in args.set)}
    cfg = LocomoConfig(**kw)
    bad = [s for s in cfg.systems if s not in SYSTEMS]
    if bad:
        ap.error(f"unknown systems {bad}: use {','.join(SYSTEMS)}")
    cfg.out = args.out or (
        "bench/results/locomo_dev.json" if cfg.split == "dev" else "bench/results/locomo.json"
    )
    result = run(cfg, on_progress=lambda partial: save(partial, cfg.out, cfg.workdir))
    save(result, cfg.out, cfg.workdir)
    print(table(result))
    print(f"wrote {cfg.out} ({result['seconds']:.0f}s, {result['cpu_seconds']:.0f} CPU-s)")


if __name__ == "__main__":
    main()
