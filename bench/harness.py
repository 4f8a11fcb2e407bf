"""Does it remember? Task accuracy of MegaContext against baselines at the same window budget.

For every task instance (``bench.tasks``: passkey, RULER-style, world simulator) the same
question is answered by each system from the same history, with the same base model, the same
greedy decoding and the same number of model positions:

* ``trunc``: the newest tokens of the history that fit the window, raw;
* ``full``: the whole history raw, where it fits the model (≤ 8k positions);
* ``rag``: 32-token chunks retrieved by BM25 (with their neighbours), in document order, plus
  the newest tokens, filling the same budget (``bench.memory`` has the needle tasks on real
  text and the better-placed RAG baseline);
* ``mc-<scorer>``: MegaContext over a tree of the history: gists + focus with that scorer and
  the retrieval assist; ``mc-recency-noret`` switches the retrieval assist off.

The haystack is held-out text (the corpus ``test`` split, never trained on). Results are rows
of JSON; ``summarise`` turns them into tables and a plot.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench import tasks as T
from bench._common import loadavg, machine_info
from mcmodels.decoding import trim
from mcmodels.defaults import DEFAULT_MODEL
from mcruntime.focus import RAW_RECENT, raw_recent_for

CEILING = "ceiling"  # the model's own score when the whole (short) history fits the window
SYSTEMS = (
    "trunc",
    "full",
    "rag",
    "mc-recency",
    "mc-recency-noret",
    "mc-similarity",
    "mc-attention",
    "mc-lensnet",
)


@dataclass
class HarnessConfig:
    tasks: tuple[str, ...] = (
        "passkey",
        "multikey",
        "multivalue",
        "variable_tracking",
        "common_words",
        "world",
    )
    lengths: tuple[int, ...] = (4096, 16384, 65536)
    long_lengths: tuple[int, ...] = (262144, 1048576)  # passkey only: the expensive histories
    seeds: int = 3  # each seed is ~30 min on 2 CPU cores with SmolLM2-135M
    window: int = 2048
    max_new_tokens: int = 32
    systems: tuple[str, ...] = SYSTEMS
    model: str = DEFAULT_MODEL
    seed: int = 1234
    ceiling_length: int = 1536  # a history that fits a 2k window raw: the model's own score
    out: str = "bench/results/harness.json"
    workdir: str | None = None  # where the trees are built (a temp folder by default)
    split: str = "test"  # haystack text: "test" for results, "dev" for any tuning
    session: dict = field(default_factory=dict)  # SessionConfig overrides for the mc systems

    @classmethod
    def quick(cls, **kw) -> HarnessConfig:
        base = dict(
            tasks=("passkey", "multikey", "world"), lengths=(4096, 16384), long_lengths=(), seeds=1
        )
        base.update(kw)
        return cls(**base)


@dataclass
class Row:
    task: str
    length: int
    seed: int
    system: str
    score: float | None
    output: str = ""
    answers: list[str] = field(default_factory=list)
    depth: float | None = None
    seconds: float = 0.0
    note: str = ""


# -- shared decoding ---------------------------------------------------------------------------


class Baselines:
    """Truncation, full context and RAG over raw chunks, for one base model and window."""

    def __init__(self, base, parts, window: int, max_new: int, raw_recent: int = RAW_RECENT):
        self.base, self.parts, self.window, self.max_new = base, parts, window, max_new
        self.raw_recent = raw_recent
        self.end_ids = set(parts.end_ids) | set(base.tokenizer.end_ids)

    def _turn(self, question: str) -> list[int]:
        return self.parts.before_user + self.base.tokenizer.encode(question) + self.parts.after_user

    def budget(self, question: str) -> int:
        return self.window - len(self.parts.prefix) - len(self._turn(question)) - self.max_new

    def _answer(self, mem_ids: list[int], question: str) -> str:
        ids = self.parts.prefix + list(mem_ids) + self._turn(question)
        out = self.base.generate(ids, self.max_new, stop_ids=self.end_ids)
        return trim(self.base.tokenizer.decode(out, skip_special=True))

    def trunc(self, ids: np.ndarray, question: str) -> str:
        return self._answer(ids[-self.budget(question) :].tolist(), question)

    def full(self, ids: np.ndarray, question: str) -> str | None:
        overhead = self.window - self.budget(question)
        if len(ids) + overhead > self.base.max_positions:
            return None
        return self._answer(ids.tolist(), question)

    def rag(self, ids: np.ndarray, question: str, block: int = 32) -> str:
        """BM25 over raw chunks (``bench.memory.RawIndex``), hits and their neighbours in
        document order, plus the newest tokens, filling the budget."""
        from bench.memory import RawIndex

        budget = self.budget(question)
        recent = raw_recent_for(budget, self.raw_recent)  # as the sessions keep it
        index = RawIndex(self.base, ids[: len(ids) - recent], block)
        if index.n <= 0:
            return self.trunc(ids, question)
        chosen = index.fill(question, (budget - recent) // block)
        mem = [int(t) for b in chosen for t in ids[b * block : (b + 1) * block]]
        return self._answer(mem + ids[len(ids) - recent :].tolist(), question)


# -- the run -----------------------------------------------------------------------------------


def haystack_texts(*, split: str = "test", min_chars: int = 2000) -> tuple[list[str], str]:
    """Held-out text (the corpus test split; dev for tuning) and the corpus manifest hash."""
    from mcmodels.corpus import Corpus, build_corpus, default_corpus_dir

    root = default_corpus_dir()
    corpus = Corpus(root) if (root / "manifest.json").is_file() else build_corpus(root)
    texts = [d["text"] for d in corpus.docs(split) if len(d["text"]) >= min_chars]
    return texts, corpus.manifest_hash


def _mc_systems(systems) -> list[str]:
    return [s for s in systems if s.startswith("mc-")]


def run(
    cfg: HarnessConfig,
    *,
    progress=print,
    base=None,
    texts: list[str] | None = None,
    on_instance=None,
) -> dict:
    """Every system on every instance; seeds outermost, so a run cut short still covers every
    task and length for its first seeds. ``on_instance(result)`` gets the rows so far (a partial
    result that ``save`` can write) after each instance."""
    import mcmodels
    from mcruntime import Session, SessionConfig
    from mcruntime.layout import chat_layout

    torch.manual_seed(cfg.seed)
    base = base or mcmodels.load_base(cfg.model)
    manifest = None
    if texts is None:
        texts, manifest = haystack_texts(split=cfg.split)
    hay = T.Haystack(texts, base.tokenizer.encode)
    parts = chat_layout(base.tokenizer)
    bl = Baselines(base, parts, cfg.window, cfg.max_new_tokens)
    lensnet = mcmodels.default_lensnet(base)
    gistnet = mcmodels.default_gistnet(base)
    systems = [s for s in cfg.systems if s != "mc-lensnet" or lensnet is not None]
    work = Path(cfg.workdir or tempfile.mkdtemp(prefix="mc-harness-"))
    rows: list[Row] = []
    plan = [  # per seed: every task and length, then the long passkey histories
        (s, k, n)
        for s in range(cfg.seeds)
        for k, n in [(k, n) for k in cfg.tasks for n in cfg.lengths]
        + [("passkey", n) for n in cfg.long_lengths if "passkey" in cfg.tasks]
    ]
    machine = machine_info()  # the commit and load this run started with
    t_start = time.perf_counter()
    for kind in cfg.tasks:  # the ceiling: same tasks, short enough to read whole
        for s in range(cfg.seeds):
            seed = cfg.seed + 1000 * s + 7
            n = cfg.ceiling_length
            for _ in range(4):  # long paragraphs can overshoot: shrink until it fits the window
                task = T.GENERATORS[kind](hay, n, seed)
                ids = np.asarray(base.tokenizer.encode(task.history), dtype=np.int64)
                if len(ids) <= bl.budget(task.question):
                    break
                n = int(n * 0.8)
            t0 = time.perf_counter()
            out = bl.full(ids, task.question) if len(ids) <= bl.budget(task.question) else None
            row = _row(task, cfg.ceiling_length, seed, CEILING, out, None, t0)
            row.note = f"history cut to {n} tokens to fit" if n != cfg.ceiling_length else ""
            rows.append(row)
        progress(f"{kind:>17} ceiling: " + " ".join(f"{r.score}" for r in rows if r.task == kind))
    for s, kind, n in plan:
        seed = cfg.seed + 1000 * s + n % 997
        task = T.GENERATORS[kind](hay, n, seed)
        ids = np.asarray(base.tokenizer.encode(task.history), dtype=np.int64)
        depth = task.meta.get("target_depth", task.depths[0] if task.depths else None)
        for system in systems:
            if system.startswith("mc-"):
                continue
            t0 = time.perf_counter()
            out = getattr(bl, system)(ids, task.question)
            rows.append(_row(task, n, seed, system, out, depth, t0))
        if _mc_systems(systems):
            tree = work / f"{kind}-{n}-{seed}.mc"
            if tree.exists():
                shutil.rmtree(tree)
            t0 = time.perf_counter()
            writer = Session(str(tree), model=base, gistnet=gistnet, window=cfg.window,
                             config=SessionConfig(retrieval=None))  # fmt: skip
            writer.append_ids(ids.tolist(), source=f"{kind}-haystack")
            ingest_s = time.perf_counter() - t0
            for system in _mc_systems(systems):
                scorer = system[3:].removesuffix("-noret")
                sc = SessionConfig(
                    **{**cfg.session, "scorer": scorer},
                    retrieval=None if system.endswith("-noret") else "bm25",
                )

                t0 = time.perf_counter()
                sess = Session(str(tree), model=base, gistnet=gistnet, lensnet=lensnet,
                               window=cfg.window, config=sc, mode="r")  # fmt: skip
                out = sess.ask(
                    task.question, max_new_tokens=cfg.max_new_tokens, remember=False
                ).text
                r = _row(task, n, seed, system, out, depth, t0)
                r.note = f"ingest {ingest_s:.1f}s"
                rows.append(r)
            shutil.rmtree(tree, ignore_errors=True)
        done = [r for r in rows if r.task == kind and r.length == n and r.seed == seed]
        progress(
            f"{kind:>17} {n:>8} seed {seed}: "
            + " ".join(f"{r.system}={'-' if r.score is None else f'{r.score:.2f}'}" for r in done)
        )
        if on_instance is not None:
            on_instance(_result(cfg, base, gistnet, lensnet, manifest, machine, rows, t_start))
    return _result(cfg, base, gistnet, lensnet, manifest, machine, rows, t_start)


def _result(cfg, base, gistnet, lensnet, manifest, machine, rows, t_start) -> dict:
    result = {
        "config": asdict(cfg),
        "model": base.name,
        "gistnet": getattr(gistnet, "checkpoint_id", None) or "untrained",
        "lensnet": getattr(lensnet, "checkpoint_id", None),
        "corpus_manifest": manifest,
        "machine": {**machine, "loadavg_end": loadavg()},
        "seconds": time.perf_counter() - t_start,
        "rows": [asdict(r) for r in rows],
    }
    result["summary"] = summarise(result["rows"])
    return result


def _row(task: T.Task, n: int, seed: int, system: str, out: str | None, depth, t0: float) -> Row:
    score = None if out is None else task.score(out)
    return Row(
        task.kind, n, seed, system, score, out or "", task.answers, depth, time.perf_counter() - t0
    )


def summarise(rows: list[dict]) -> dict:
    """Mean score per system × length (over tasks and seeds), and per task × system."""
    by_len: dict[str, dict[int, list[float]]] = {}
    by_task: dict[str, dict[str, list[float]]] = {}
    by_tl: dict[str, dict[str, dict[int, list[float]]]] = {}
    for r in rows:
        if r["score"] is None:
            continue
        by_len.setdefault(r["system"], {}).setdefault(r["length"], []).append(r["score"])
        by_task.setdefault(r["task"], {}).setdefault(r["system"], []).append(r["score"])
        by_tl.setdefault(r["task"], {}).setdefault(r["system"], {}).setdefault(
            r["length"], []
        ).append(r["score"])
    return {
        "by_length": {
            s: {n: float(np.mean(v)) for n, v in sorted(d.items())} for s, d in by_len.items()
        },
        "by_task": {t: {s: float(np.mean(v)) for s, v in d.items()} for t, d in by_task.items()},
        "by_task_length": {
            t: {s: {n: float(np.mean(v)) for n, v in sorted(dd.items())} for s, dd in d.items()}
            for t, d in by_tl.items()
        },
        "n": {s: sum(len(v) for v in d.values()) for s, d in by_len.items()},
    }


def table(result: dict, detail: tuple[str, ...] = ("passkey", "multikey")) -> str:
    """Accuracy per system × history length, the ceiling, per task × system, and per history
    length for the ``detail`` tasks (the mean over tasks mixes in tasks the model cannot do even
    with the whole history in view)."""
    summ = result["summary"]["by_length"]
    lengths = sorted({int(n) for s, d in summ.items() if s != CEILING for n in d})
    systems = [s for s in SYSTEMS if s in summ]
    fmt = lambda c: "–" if c is None else f"{c:.2f}"  # noqa: E731
    lines = ["| system | " + " | ".join(f"{n // 1024}k" for n in lengths) + " |"]
    lines.append("|" + "---|" * (len(lengths) + 1))
    for s in systems:
        cells = [summ[s].get(n, summ[s].get(str(n))) for n in lengths]
        lines.append(f"| {s} | " + " | ".join(fmt(c) for c in cells) + " |")
    if CEILING in summ:
        ((n, v),) = summ[CEILING].items()
        lines.append(f"\nCeiling (the same tasks with a {n}-token history read whole): {v:.2f}\n")
    cols = [*systems, CEILING]
    lines += ["| task | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for t, d in sorted(result["summary"]["by_task"].items()):
        lines.append(f"| {t} | " + " | ".join(fmt(d.get(c)) for c in cols) + " |")
    for t in detail:
        d = result["summary"].get("by_task_length", {}).get(t)
        if not d:
            continue
        ns = sorted({int(n) for s, dd in d.items() if s != CEILING for n in dd})
        lines += [f"\n{t} by history length:\n"]
        lines += ["| system | " + " | ".join(f"{n // 1024}k" for n in ns) + " |"]
        lines.append("|" + "---|" * (len(ns) + 1))
        for s in [s for s in SYSTEMS if s in d]:
            lines.append(
                f"| {s} | " + " | ".join(fmt(d[s].get(n, d[s].get(str(n)))) for n in ns) + " |"
            )
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    """Passkey accuracy per history length (the only task run at every length) next to the mean
    over all tasks at the lengths where every task ran: one mixed mean would compare the long
    passkey-only lengths with the short all-task ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = result["summary"]
    tasks_at = {}
    for r in result["rows"]:
        if r["system"] != CEILING:
            tasks_at.setdefault(int(r["length"]), set()).add(r["task"])
    all_tasks = set().union(*tasks_at.values()) if tasks_at else set()
    full_lengths = {n for n, t in tasks_at.items() if t == all_tasks}
    mean_by_len: dict[str, dict[int, list[float]]] = {}
    for r in result["rows"]:
        if r["system"] != CEILING and r["score"] is not None and int(r["length"]) in full_lengths:
            mean_by_len.setdefault(r["system"], {}).setdefault(int(r["length"]), []).append(
                r["score"]
            )
    panels = [
        ("passkey", summ.get("by_task_length", {}).get("passkey", {})),
        ("mean over all tasks", {s: {n: float(np.mean(v)) for n, v in d.items()}
                                 for s, d in mean_by_len.items()}),
    ]  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (title, data) in zip(axes, panels, strict=True):
        for s in [s for s in SYSTEMS if s in data]:
            pts = sorted((int(n), v) for n, v in data[s].items())
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s)
        ceil = (summ.get("by_task", {}).get("passkey", {}) if title == "passkey" else {}).get(
            CEILING
        )
        if title != "passkey" and CEILING in summ["by_length"]:
            ceil = next(iter(summ["by_length"][CEILING].values()))
        if ceil is not None:
            ax.axhline(ceil, color="grey", ls="--", lw=1, label="ceiling (history read whole)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("history length (tokens)")
        ax.set_title(title)
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("accuracy (mean over seeds)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{result['model']}, window {result['config']['window']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save(result: dict, out: str) -> None:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=1))
    p.with_suffix(".md").write_text(table(result) + "\n")
    plot(result, str(p.with_suffix(".png")))


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench harness", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few minutes on a CPU")
    ap.add_argument("--out", default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--tasks", default=None, help="comma-separated task kinds")
    ap.add_argument("--lengths", default=None, help="comma-separated history lengths")
    ap.add_argument(
        "--long-lengths", default=None, help="comma-separated passkey-only lengths ('' for none)"
    )
    ap.add_argument("--systems", default=None, help="comma-separated systems")
    ap.add_argument("--model", default=None)
    ap.add_argument("--split", default="test", choices=["test", "dev"], help="dev: for tuning only")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="SessionConfig override for the mc systems, e.g. retrieval_margin=0.05",
    )
    args = ap.parse_args(argv)
    kw: dict = {}
    if args.seeds is not None:
        kw["seeds"] = args.seeds
    if args.tasks:
        kw["tasks"] = tuple(args.tasks.split(","))
    if args.lengths:
        kw["lengths"], kw["long_lengths"] = tuple(int(x) for x in args.lengths.split(",")), ()
    if args.long_lengths is not None:
        kw["long_lengths"] = tuple(int(x) for x in args.long_lengths.split(",") if x)
    if args.systems:
        kw["systems"] = tuple(args.systems.split(","))
    if args.model:
        kw["model"] = args.model
    kw["split"] = args.split
    kw["session"] = {k: json.loads(v) for k, v in (x.split("=", 1) for x in args.set)}
    if {"scorer", "retrieval"} & kw["session"].keys():
        ap.error("--set scorer/retrieval: pick those with --systems (mc-<scorer>[-noret])")
    cfg = HarnessConfig.quick(**kw) if args.quick else HarnessConfig(**kw)
    cfg.out = args.out or ("bench/results/harness_quick.json" if args.quick else cfg.out)
    result = run(cfg, on_instance=lambda partial: save(partial, cfg.out))
    save(result, cfg.out)
    print(table(result))
    print(f"wrote {cfg.out} ({result['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
