"""Does it remember real text? Planted facts, paraphrases and a long chat, against BM25 RAG.

For every instance (``bench.needles``) each system answers the same probes from the same
history with the same base model, window and decoding (greedy, with the repetition guards of
``mcmodels.decoding``):

* ``trunc``: the newest tokens that fit the window;
* ``rag``: what a user would build instead: BM25 over raw 32-token chunks of the history, the
  top 3 chunks with one neighbour on each side, weakest first, right before the question (the
  placement that read best on the dev split: ``bench/results/memory_dev.md``);
* ``rag-fill``: the same BM25 hits with neighbours filling the whole budget in timeline order;
* ``mc``: MegaContext with its defaults (``mcruntime.SessionConfig``);
* ``mc-window``: MegaContext with the working context filling the window beside the recall
  section (the default keeps it to ``memory_budget`` positions);
* ``mc-timeline``: MegaContext without the recall section (hits are only expanded in place);
* ``mc-raw``: MegaContext with chat turns recalled as stored (``User: …``), not in words;
* ``oracle``: the reader's ceiling: the block holding the answer with its neighbours, in the
  same layout as the recall section: what the model does when retrieval is perfect.

Beside accuracy each row records *found*: whether the sentence holding the answer was inside
what the system showed the model (the focus recall). Held-out text: the corpus ``test`` split
for results, ``dev`` for any tuning.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench import needles as N
from bench._common import loadavg, machine_info
from mcmodels.defaults import DEFAULT_MODEL
from mcruntime.focus import raw_recent_for

SYSTEMS = ("trunc", "rag", "rag-fill", "mc", "mc-window", "mc-timeline", "mc-raw", "oracle")
TASKS = ("passkey", "facts", "paraphrase", "oneform", "chat")


@dataclass
class MemoryConfig:
    lengths: tuple[int, ...] = (4096, 16384, 65536, 262144, 1048576)
    chat_lengths: tuple[int, ...] = (16384, 65536, 262144)
    oneform_lengths: tuple[int, ...] = (16384, 262144, 1048576)  # k facts of one form
    seeds: int = 10
    first_seed: int = 0  # seeds first_seed .. first_seed + seeds - 1 (to add seeds to a run)
    window: int = 2048
    max_new_tokens: int = 48
    systems: tuple[str, ...] = ("trunc", "rag", "mc", "oracle")
    model: str = DEFAULT_MODEL
    seed: int = 4321
    split: str = "test"
    out: str = "bench/results/memory.json"
    workdir: str | None = None
    session: dict = field(default_factory=dict)  # SessionConfig overrides for the mc systems
    # who answers, for every system: "keeper" (the base model on its window) or a text reader
    # (mcmodels.readers) shown passages as text in its own template (mcruntime.reading)
    reader: str = "keeper"


@dataclass
class Row:
    task: str
    length: int
    seed: int
    system: str
    correct: bool
    found: bool | None
    output: str
    answer: str
    seconds: float
    note: str = ""


class Reader:
    """The baselines: the base model reading raw ids through the same window and layout."""

    def __init__(self, base, window: int, max_new: int):
        from mcruntime.layout import chat_layout

        self.base, self.window, self.max_new = base, window, max_new
        self.parts = chat_layout(base.tokenizer)
        self.end_ids = set(self.parts.end_ids) | set(base.tokenizer.end_ids)

    def turn(self, question: str) -> list[int]:
        return self.parts.before_user + self.base.tokenizer.encode(question) + self.parts.after_user

    def budget(self, question: str) -> int:
        return self.window - len(self.parts.prefix) - len(self.turn(question)) - self.max_new

    def answer(self, memory: list[int], recall: list[int], question: str) -> str:
        from mcmodels.decoding import trim

        ids = self.parts.prefix + list(memory) + list(recall) + self.turn(question)
        out = self.base.generate(ids, self.max_new, stop_ids=self.end_ids)
        return trim(self.base.tokenizer.decode(out, skip_special=True))


class RawIndex:
    """BM25 over the raw 32-token chunks of one history (the RAG baseline's index)."""

    def __init__(self, base, ids: np.ndarray, block: int = 32):
        from mcruntime.lexical import EXTEND, LexicalIndex, block_terms

        self.base, self.block = base, block
        self.n = max(0, len(ids) - EXTEND) // block
        self.index = LexicalIndex()
        dec = lambda x: base.tokenizer.decode([int(t) for t in x], skip_special=True)  # noqa: E731
        self.index.add(
            block_terms(dec, ids[: self.n * block], block, following=ids[self.n * block :])
        )

    def ranked(self, question: str, k: int) -> list[int]:
        from mcruntime.lexical import query_terms

        return [b for b, _ in self.index.search(query_terms(question), k)]

    def fill(self, question: str, room: int) -> list[int]:
        """Up to ``room`` chunks: the hits with their neighbours, best first, in timeline
        order (the classic RAG context that fills the window)."""
        chosen: set[int] = set()
        for h in self.ranked(question, room):
            for nb in (h, h - 1, h + 1):
                if 0 <= nb < self.n and len(chosen) < room:
                    chosen.add(nb)
            if len(chosen) >= room:
                break
        return sorted(chosen)


class TextReader:
    """The baselines through a text reader: the same passages a keeper would read, as text in
    the reader's own prompt (``mcruntime.reading.messages``), so rag, oracle and mc differ only
    in what they choose to show."""

    def __init__(self, reader, base, max_new: int):
        self.reader, self.base, self.max_new = reader, base, max_new

    def text(self, ids) -> str:
        from mcruntime.reading import turn_text

        return turn_text(self.base.tokenizer.decode([int(t) for t in ids], skip_special=True))

    def answer(self, passages: list[list[int]], question: str, recent=()) -> str:
        from mcruntime.reading import Passage, messages

        ps = [Passage(0, 0, 0.0, "history", self.text(p)) for p in passages]
        prompt = messages(question, ps, self.text(recent) if len(recent) else "")
        return "".join(self.reader.stream(prompt, self.max_new)).strip()


def text_baseline(system: str, reader: TextReader, ids, index: RawIndex, probe: N.Probe, budget):
    """(answer, spans shown) of one baseline for one probe, read by a text reader."""
    b, q = index.block, probe.question
    if system == "trunc":
        mem = ids[-budget:]
        return reader.answer([], q, mem.tolist()), [(len(ids) - len(mem), len(ids))]
    if system == "oracle":
        s = max(0, probe.span[0] // b - 1) * b
        e = min(len(ids), (-(-probe.span[1] // b) + 1) * b)
        return reader.answer([ids[s:e].tolist()], q), [(s, e)]
    if system == "rag":
        spans = _rag_spans(index, q)
        return reader.answer([ids[s * b : e * b].tolist() for s, e in spans], q), [
            (s * b, e * b) for s, e in spans
        ]
    raise ValueError(f"{system} has no text-reader form")


def _rag_spans(index: RawIndex, q: str) -> list[list[int]]:
    """BM25's top 3 chunks with one neighbour each side, merged, weakest first."""
    spans: list[list[int]] = []
    for h in index.ranked(q, 3):
        s, e = max(0, h - 1), min(index.n, h + 2)
        for sp in spans:
            if s <= sp[1] and e >= sp[0]:
                sp[0], sp[1] = min(sp[0], s), max(sp[1], e)
                break
        else:
            spans.append([s, e])
    spans.reverse()  # ranked best first; the best goes last, right before the question
    return spans


def _covered(span, spans) -> bool:
    s, e = span
    need = set(range(s, e))
    for a, b in spans:
        need -= set(range(a, b))
    return not need


def baseline(system: str, reader: Reader, ids: np.ndarray, index: RawIndex, probe: N.Probe):
    """(answer, spans shown) of one baseline for one probe."""
    from mcruntime.layout import recall_ids

    b, q = index.block, probe.question
    budget = reader.budget(q)
    if system == "trunc":
        mem = ids[-budget:]
        return reader.answer(mem.tolist(), [], q), [(len(ids) - len(mem), len(ids))]
    if system == "oracle":
        s = max(0, probe.span[0] // b - 1) * b
        e = min(len(ids), (-(-probe.span[1] // b) + 1) * b)
        rec = recall_ids(reader.base.tokenizer, [ids[s:e].tolist()])
        return reader.answer([], rec, q), [(s, e)]
    if system == "rag":
        spans = _rag_spans(index, q)
        passages = [ids[s * b : e * b].tolist() for s, e in spans]
        rec = recall_ids(reader.base.tokenizer, passages)
        return reader.answer([], rec, q), [(s * b, e * b) for s, e in spans]
    if system == "rag-fill":
        recent = raw_recent_for(budget)  # as the sessions keep it
        chosen = index.fill(q, (budget - recent) // b)
        mem = [int(t) for c in chosen for t in ids[c * b : (c + 1) * b]]
        mem += ids[len(ids) - recent :].tolist()
        shown = [(c * b, (c + 1) * b) for c in chosen] + [(len(ids) - recent, len(ids))]
        return reader.answer(mem, [], q), shown
    raise ValueError(system)


def _mc_config(system: str, cfg: MemoryConfig):
    from mcruntime import SessionConfig

    over = dict(cfg.session)
    if system == "mc-timeline":
        over.update(recall_k=0, read_k=0, memory_budget=None)
    if system == "mc-window":
        over["memory_budget"] = None
    if system == "mc-raw":
        over["recall_roles"] = "raw"
    return SessionConfig(window=cfg.window, **over)


def mc_shown(sess, turn) -> list[tuple[int, int]]:
    """The token spans ``turn``'s answer was written from (recall, focus, the raw tail)."""
    spans = [(r["start"], r["stop"]) for r in turn.answer.recall]
    if sess.reader is None:  # a text reader never sees the keeper's expanded spans
        spans += [(f["start"], f["stop"]) for f in turn.answer.focus]
    wc = sess.focus.wc
    spans.append((wc.raw_floor(sess.focus.config.raw_recent), wc.length))
    return spans


def build_tree(path: Path, base, gistnet, inst: N.Instance) -> float:
    """The instance's history as a tree (one segment per chat turn), with its stored index."""
    import mcstore
    from mcruntime import Session
    from mcruntime.binding import check_binding, gistnet_binding
    from mcruntime.streaming import Gister

    if path.exists():
        shutil.rmtree(path)
    t0 = time.perf_counter()
    with Session(str(path), model=base, gistnet=gistnet, config=_no_index()) as w:
        gistnet = w.gistnet
    tree = mcstore.open(str(path), "a")
    gister = Gister.for_tree(base, gistnet, tree)
    assert check_binding(tree, gistnet_binding(base, gistnet, tree.dtype))
    for source, s, e in inst.segments or [("documents", 0, len(inst.ids))]:
        tree.append(np.asarray(inst.ids[s:e], np.int32), gister=gister, source=source)
    with Session(str(path), model=base, gistnet=gistnet) as w:  # builds and stores the index
        pass
    return time.perf_counter() - t0


def _no_index():
    from mcruntime import SessionConfig

    return SessionConfig(retrieval=None)


def run(cfg: MemoryConfig, *, progress=print, base=None, texts=None, on_instance=None) -> dict:
    import mcmodels
    from bench.harness import haystack_texts
    from bench.tasks import Haystack
    from mcruntime import Session

    base = base or mcmodels.load_base(cfg.model)
    manifest = None
    if texts is None:
        texts, manifest = haystack_texts(split=cfg.split)
    hay = Haystack(texts, base.tokenizer.encode)
    reader = Reader(base, cfg.window, cfg.max_new_tokens)
    loaded = None if cfg.reader == mcmodels.KEEPER else mcmodels.load_reader(cfg.reader)
    text = TextReader(loaded, base, cfg.max_new_tokens) if loaded is not None else None
    gistnet = mcmodels.default_gistnet(base)
    work = Path(cfg.workdir or tempfile.mkdtemp(prefix="mc-memory-"))
    machine = machine_info()
    t_start = time.perf_counter()
    rows: list[Row] = []
    seeds = range(cfg.first_seed, cfg.first_seed + cfg.seeds)
    plan = [(s, "documents", n) for s in seeds for n in cfg.lengths]
    plan += [(s, "conversation", n) for s in seeds for n in cfg.chat_lengths]
    plan += [(s, "oneform", n) for s in seeds for n in cfg.oneform_lengths]
    plan.sort(key=lambda p: (p[0], p[2]))  # seeds outermost: a cut-short run covers every length
    for s, kind, n in plan:
        seed = cfg.seed + 1000 * s + n % 997
        inst = getattr(N, kind)(hay, n, seed)
        ids = np.asarray(inst.ids, dtype=np.int64)
        index = RawIndex(base, ids)
        for system in [x for x in cfg.systems if not x.startswith("mc")]:
            for p in inst.probes:
                t0 = time.perf_counter()
                if text is None:
                    out, shown = baseline(system, reader, ids, index, p)
                else:
                    budget = reader.budget(p.question)
                    out, shown = text_baseline(system, text, ids, index, p, budget)
                rows.append(_row(p, n, seed, system, out, _covered(p.span, shown), t0))
        mcs = [x for x in cfg.systems if x.startswith("mc")]
        if mcs:
            tree = work / f"{kind}-{n}-{seed}.mc"
            ingest_s = build_tree(tree, base, gistnet, inst)
            for system in mcs:
                with Session(str(tree), model=base, gistnet=gistnet, config=_mc_config(system, cfg),
                             mode="r", reader=loaded or mcmodels.KEEPER) as sess:  # fmt: skip
                    for p in inst.probes:
                        t0 = time.perf_counter()
                        turn = sess.ask(
                            p.question, max_new_tokens=cfg.max_new_tokens, remember=False
                        )
                        shown = _covered(p.span, mc_shown(sess, turn))
                        r = _row(p, n, seed, system, turn.text, shown, t0)
                        first = turn.answer.timings["first_token_s"]
                        r.note = f"ingest {ingest_s:.1f}s; first token {first:.1f}s"
                        rows.append(r)
            shutil.rmtree(tree, ignore_errors=True)
        done = [r for r in rows if r.seed == seed and r.length == n]
        progress(f"{kind:>12} {n:>8} seed {seed}: " + " ".join(
            f"{r.task[:4]}/{r.system}={int(r.correct)}{'f' if r.found else '-'}" for r in done))  # fmt: skip
        if on_instance is not None:
            on_instance(_result(cfg, base, manifest, machine, rows, t_start))
    return _result(cfg, base, manifest, machine, rows, t_start)


def _row(p: N.Probe, n: int, seed: int, system: str, out: str, found, t0: float) -> Row:
    from bench.tasks import norm

    ok = norm(p.answer) in norm(out)
    return Row(p.task, n, seed, system, ok, found, out, p.answer, time.perf_counter() - t0)


def _result(cfg, base, manifest, machine, rows, t_start) -> dict:
    result = {
        "config": asdict(cfg),
        "model": base.name,
        "reader": cfg.reader,
        "corpus_manifest": manifest,
        "machine": {**machine, "loadavg_end": loadavg()},
        "seconds": time.perf_counter() - t_start,
        "rows": [asdict(r) for r in rows],
    }
    result["summary"] = summarise(result["rows"])
    return result


def summarise(rows: list[dict]) -> dict:
    """Accuracy and focus recall per task × system × length, with the number of probes."""
    acc: dict = {}
    for r in rows:
        cell = (
            acc.setdefault(r["task"], {})
            .setdefault(r["system"], {})
            .setdefault(str(r["length"]), {"correct": 0, "found": 0, "n": 0})
        )
        cell["n"] += 1
        cell["correct"] += int(r["correct"])
        cell["found"] += int(bool(r["found"]))
    return acc


def table(result: dict) -> str:
    summ = result["summary"]
    lines = []
    for task in [t for t in TASKS if t in summ]:
        d = summ[task]
        lengths = sorted({int(n) for s in d.values() for n in s})
        lines += [f"\n{task}: accuracy (focus recall), n probes per cell\n"]
        lines.append("| system | " + " | ".join(_label(n) for n in lengths) + " |")
        lines.append("|" + "---|" * (len(lengths) + 1))
        for s in [x for x in SYSTEMS if x in d]:
            cells = []
            for n in lengths:
                c = d[s].get(str(n))
                cells.append("–" if not c else
                             f"{c['correct'] / c['n']:.2f} ({c['found'] / c['n']:.2f}) n={c['n']}")  # fmt: skip
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines).strip()


def _label(n: int) -> str:
    return f"{n >> 20}M" if n >= 1 << 20 else f"{n >> 10}k"


def compact(result: dict, systems=("mc", "rag", "trunc", "oracle")) -> str:
    """One table: accuracy per task, system and length; focus recall (the answer's sentence was
    shown to the model) in brackets for the retrieving systems."""
    summ = result["summary"]
    lengths = sorted({int(n) for d in summ.values() for s in d.values() for n in s})
    lines = ["| task | system | " + " | ".join(_label(n) for n in lengths) + " |"]
    lines.append("|" + "---|" * (len(lengths) + 2))
    for task in [t for t in TASKS if t in summ]:
        for s in [x for x in systems if x in summ[task]]:
            cells = []
            for n in lengths:
                c = summ[task][s].get(str(n))
                if not c:
                    cells.append("–")
                    continue
                acc = f"{c['correct'] / c['n']:.2f}"
                if s in ("mc", "rag"):
                    acc += f" ({c['found'] / c['n']:.2f})"
                cells.append(f"**{acc}**" if s == "mc" else acc)
            lines.append(f"| {task} | {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(result: dict, out: str) -> None:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=1))
    p.with_suffix(".md").write_text(
        f"{result['model']}, reader {result.get('reader', 'keeper')}, "
        f"window {result['config']['window']}, split "
        f"{result['config']['split']}, {result['seconds'] / 60:.0f} min\n\n{table(result)}\n"
    )


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds at 4k and 16k (~10 min)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--first-seed", type=int, default=0, help="add seeds to an earlier run")
    ap.add_argument("--lengths", default=None, help="comma-separated document history lengths")
    ap.add_argument("--chat-lengths", default=None, help="comma-separated chat lengths ('' none)")
    ap.add_argument("--systems", default=None, help=f"comma-separated, from {','.join(SYSTEMS)}")
    ap.add_argument("--model", default=None)
    ap.add_argument("--reader", default=None, help="who answers: keeper (default) or a reader name")
    ap.add_argument("--oneform-lengths", default=None, help="comma-separated ('' none)")
    ap.add_argument("--split", default="test", choices=["test", "dev"], help="dev: for tuning only")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="SessionConfig override for the mc systems, e.g. recall_k=2")  # fmt: skip
    args = ap.parse_args(argv)
    kw: dict = {"split": args.split}
    if args.quick:
        kw.update(seeds=2, lengths=(4096, 16384), chat_lengths=(16384,), oneform_lengths=(16384,))
    if args.seeds is not None:
        kw["seeds"] = args.seeds
    kw["first_seed"] = args.first_seed
    if args.lengths is not None:
        kw["lengths"] = tuple(int(x) for x in args.lengths.split(",") if x)
    if args.chat_lengths is not None:
        kw["chat_lengths"] = tuple(int(x) for x in args.chat_lengths.split(",") if x)
    if args.oneform_lengths is not None:
        kw["oneform_lengths"] = tuple(int(x) for x in args.oneform_lengths.split(",") if x)
    if args.reader:
        kw["reader"] = args.reader
    if args.systems:
        kw["systems"] = tuple(args.systems.split(","))
    if args.model:
        kw["model"] = args.model
    kw["session"] = {k: json.loads(v) for k, v in (x.split("=", 1) for x in args.set)}
    cfg = MemoryConfig(**kw)
    cfg.out = args.out or (
        f"bench/results/memory_{args.split}.json" if args.split == "dev" else cfg.out
    )
    result = run(cfg, on_instance=lambda partial: save(partial, cfg.out))
    save(result, cfg.out)
    print(table(result))
    print(f"wrote {cfg.out} ({result['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
