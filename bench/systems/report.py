"""The report: tables and a computed summary in markdown, from the results alone.

Everything here reads the result dict (``systems.json``) and nothing else, so
``--report-only`` redraws the same report from a saved run. No number in the summary is typed
in by hand.
"""

from __future__ import annotations

import statistics

import numpy as np

from bench.systems.decode import RATIOS
from bench.systems.plan import TARGET_RATIO


def _f(x, fmt="{:.1f}", none="–"):
    return none if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def _n(n: int) -> str:
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{unit}"
    return f"{n:,}"


def _size(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:,.0f} {unit}" if unit == "B" else f"{b:,.1f} {unit}"
        b /= 1024
    return f"{b:,.1f} TiB"


def get_in(d: dict, *path):
    """``d[path[0]][path[1]]...``, or None where a key is missing."""
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def summary(res: dict) -> list[str]:
    """Headline lines computed from the results (nothing here is typed in by hand)."""
    out = []
    for r in res["models"].values():
        ns = list(r["decode"])
        lo, hi = ns[0], ns[-1]
        d = r["decode"][hi]
        rw, rc = (
            d["ratio_vs_smallest"]["decode_median"],
            d["ratio_vs_smallest"]["decode_cpu_median"],
        )
        met = (
            "met"
            if rw is not None and rc is not None and max(rw, rc) <= TARGET_RATIO
            else "NOT met"
        )
        out.append(
            f"- **{r['base']}**: pure decode step at {_n(int(hi))} vs {_n(int(lo))} tokens of "
            f"history: {_f(rw, '{:.3f}')}x wall median, {_f(rc, '{:.3f}')}x CPU median "
            f"(target <= {TARGET_RATIO}: {met}); "
            f"{_f(get_in(r['decode'][lo], 'decode', 'median_ms'), '{:.1f}')} -> "
            f"{_f(get_in(d, 'decode', 'median_ms'), '{:.1f}')} ms/token."
        )
        parts, recomputes = [], []
        for n in ns:
            dd = r["decode"][n]
            pos = [p for p in dd["refocus_recomputed_positions"] if p > 1]
            recomputes += pos
            parts.append(
                f"{_n(int(n))} {_f(dd['amortized_ms_per_token'], '{:.1f}')} ms "
                f"({len(pos)}/{len(dd['refocus_recomputed_positions'])} refocus steps "
                "changed the context)"
            )
        windows = [x for n in ns for x in (r["decode"][n].get("window_positions") or [])]
        line = (
            f"  Amortized incl. a refocus every {r['session_config']['refocus_every']} tokens: "
            + ", ".join(parts)
            + "."
        )
        if recomputes and windows and r["session_config"].get("shift_cache"):
            line += (
                f" Each refocus that changed the context computed {min(recomputes)}–"
                f"{max(recomputes)} of the {min(windows)}–{max(windows)} cached positions (the "
                "unchanged entries after an edit are moved, not recomputed)."
            )
        elif recomputes and windows:
            # the cache is recomputed from the first changed entry to its end
            depth = max(0.0, 1 - statistics.median(recomputes) / statistics.median(windows))
            line += (
                f" Each refocus that changed the context recomputed {min(recomputes)}–"
                f"{max(recomputes)} of the {min(windows)}–{max(windows)} cached positions (on "
                f"median the first changed entry is {depth:.0%} of the way into the window), so "
                "the amortized cost follows how many refocus steps edited the context."
            )
        out.append(line)
        out.append(_storage_line(r, lo, hi))
        rss = r.get("rss") or {}
        if lo in rss and hi in rss and "error" not in rss[lo] and "error" not in rss[hi]:
            out.append(
                f"  RSS during chat: {rss[lo]['rss_chat_max_mib']:.0f} MiB at {_n(int(lo))}, "
                f"{rss[hi]['rss_chat_max_mib']:.0f} MiB at {_n(int(hi))}."
            )
        ing = r.get("ingest") or {}
        if "local" in ing:
            line = f"  Ingest: {ing['local']['tokens_per_s']:,.0f} tokens/s local"
            if "s3" in ing:
                line += (
                    f", {ing['s3']['tokens_per_s']:,.0f} on S3 (moto) "
                    f"({ing['s3_over_local']['tokens_per_s']:.2f}x)"
                )
            share = ing["local"]["gist_s"] / ing["local"]["seconds"]
            out.append(line + f"; GistNet takes {share:.0%} of the local time.")
        if r.get("flat"):
            out.append("  " + flat_summary(r["flat"]))
    return out


def flat_summary(f: dict) -> str:
    """One line: a whole chat turn per token, largest history over smallest."""
    ns = list(f["histories"])
    lo, hi = f["histories"][ns[0]], f["histories"][ns[-1]]
    rat = f["ratio"]

    def pair(m: str) -> str:
        return (
            f"{_f(lo[f'{m}_ms_per_token'], '{:.2f}')} -> {_f(hi[f'{m}_ms_per_token'], '{:.2f}')}"
            f" ms/token ({_f(rat.get(m), '{:.2f}')}x)"
        )

    return (
        f"Flat cost (`Session.ask`, window {f['window']}, {f['new_tokens']}-token answers, "
        f"{_n(int(ns[0]))} vs {_n(int(ns[-1]))} tokens of history in "
        f"{f['segment_tokens']}-token segments): whole turn {pair('ask')}, CPU "
        f"{pair('ask_cpu')}; decode loop {pair('decode')}; runtime outside the model "
        f"{pair('runtime')}."
    )


def _flat_table(f: dict) -> list[str]:
    lines = [
        f"Flat cost: whole `Session.ask` turns (question focus and retrieval, decode with a "
        f"refocus every 32 tokens, focus report, both turns appended to the tree), "
        f"{f['new_tokens']} forced tokens each, window {f['window']}, on histories of "
        f"{f['segment_tokens']}-token segments; {f['turns']} turns per session alternating "
        f"between them, medians of ms/token over all but the first {f['warmup']} (shown apart). "
        "Model = its forward steps (`window.logits`); runtime = turn - model.",
        "",
    ]
    rows = []
    for n, h in f["histories"].items():
        first = h.get("first_turn_ms_per_token") or {}
        rows.append([
            _n(int(n)), f"{h.get('segments') or 0:,}",
            _f(h.get("session_open_s"), "{:.2f}"),
            _f(h["ask_ms_per_token"], "{:.3f}"), _f(h["ask_cpu_ms_per_token"], "{:.3f}"),
            _f(h["decode_ms_per_token"], "{:.3f}"), _f(h["model_ms_per_token"], "{:.3f}"),
            _f(h["runtime_ms_per_token"], "{:.3f}"), _f(first.get("ask"), "{:.3f}"),
            str(h["turns_measured"]),
        ])  # fmt: skip
    rows.append(
        ["ratio", "", ""] + [_f(f["ratio"].get(m), "{:.3f}x") for m in
                             ("ask", "ask_cpu", "decode", "model", "runtime")] + ["", ""]
    )  # fmt: skip
    return lines + _table(
        ["history", "segments", "open s", "turn ms/token wall", "turn CPU", "decode loop",
         "model", "runtime (turn - model)", "first turn", "turns"],
        rows,
    )  # fmt: skip


def flat_tables(res: dict) -> str:
    """The machine, then the flat-cost summary and table of every model (``--flat-only``)."""
    lines = _machine(res["machine"])
    for model, r in res["models"].items():
        lines += ["", f"## {model}: {r['base']} (d={r['d_model']})", "",
                  flat_summary(r["flat"]), "", *_flat_table(r["flat"])]  # fmt: skip
    lines.append(f"\nTotal benchmark time: {res['seconds'] / 60:.1f} min.")
    return "\n".join(lines)


def flat_markdown(res: dict) -> str:
    """The whole ``flat_cost.md``."""
    cmd = "python -m bench systems --flat-only" + (" --quick" if res.get("quick") else "")
    return (
        f"# Flat cost of a chat turn\n\nProduced by `{cmd}` ({res['seconds'] / 60:.1f} min). "
        "Raw numbers: `flat_cost.json`. The same section runs in the full systems benchmark.\n\n"
        + flat_tables(res)
        + "\n"
    )


def _storage_line(r: dict, lo: str, hi: str) -> str:
    b = r["bytes"][hi]
    line = (
        f"  Storage: {b['bytes_per_million_tokens'] / 2**20:.1f} MiB per million tokens, "
        f"{b['kv_over_tree_fp16']:,.0f}x smaller than the fp16 KV cache of the same history. "
        f"Session open {_f(r['session_open_s'][lo], '{:.2f}')} s -> "
        f"{_f(r['session_open_s'][hi], '{:.2f}')} s"
    )
    keys = get_in(r, "session_open_index_keys", hi)
    if keys is None:  # results from before the index was stored with the tree
        return line + " (retrieval index rebuilt from the tree)."
    index = b["by_kind"].get("retrieval index", 0)
    return line + (
        f" (retrieval index {_f(get_in(r, 'session_open_index_s', lo), '{:.2f}')} s -> "
        f"{_f(get_in(r, 'session_open_index_s', hi), '{:.2f}')} s: {keys['stored']:,} of "
        f"{keys['total']:,} level-1 keys loaded from the tree, the rest indexed from its "
        f"tokens). The stored index is {index / b['total']:.0%} of the bytes."
    )


def markdown(res: dict) -> str:
    """The whole ``systems.md``."""
    cmd = "python -m bench systems" + (" --quick" if res.get("quick") else "")
    return (
        f"# Systems benchmarks\n\nProduced by `{cmd}` "
        f"({res['seconds'] / 60:.1f} min). Raw numbers: `systems.json`; plot: "
        "`systems_latency.png`.\n\n" + tables(res) + "\n"
    )


def _machine(m: dict) -> list[str]:
    return [
        f"Machine: {m['cpu']}, {m['cores']} cores (shared), {_f(m.get('memory_gib'), '{:.0f}')} "
        f"GiB, torch {m['torch']} on {m['torch_threads']} thread; load average "
        f"{m.get('loadavg_start')} at start, {m.get('loadavg_end')} at end; commit "
        f"{m['git_commit'][:10]}{' (dirty)' if m.get('git_dirty') else ''}; {m['date']}.",
        "Wall = elapsed time; CPU = this thread's CPU time: it leaves out time the scheduler "
        "gave to other processes on this shared machine, but not their effect on shared caches "
        "and cores. Ratios compare sessions measured side by side in the same run.",
    ]


def tables(res: dict) -> str:
    """The machine, the summary, then every model's tables, section by section."""
    lines = _machine(res["machine"])
    lines += ["", "## Summary", "", *summary(res)]
    w = res["plan"]["window"]
    for model, r in res["models"].items():
        lines += ["", f"## {model}: {r['base']} (d={r['d_model']}), window {w}, scorer "
                  f"{r['scorer']} + retrieval {r['session_config'].get('retrieval')}",
                  f"History: {r['history_source']}; GistNet {r['gistnet']}.", ""]  # fmt: skip
        lines += _decode_tables(r)
        if r.get("refocus"):
            lines += _refocus_table(r)
        if r.get("ingest"):
            lines += _ingest_table(r["ingest"], res["plan"]["ingest_chunk"])
        lines += _bytes_table(r)
        if r.get("rss"):
            lines += _rss_table(r["rss"], res["plan"]["rss_tokens"])
        if r.get("flat"):
            lines += ["", *_flat_table(r["flat"])]
        lines.append(
            "\nTree builds (once, then cached under bench/results/tmp/systems): "
            + ", ".join(
                f"{_n(int(n))} {v['build_s']:.0f} s ({v['build_tokens_per_s']:,.0f} tokens/s"
                + (f", index {v['index_s']:.0f} s" if "index_s" in v else "")
                + f"{', cached' if v.get('cached') else ''})"
                for n, v in r["builds"].items()
            )
            + "."
        )
    lines.append(f"\nTotal benchmark time: {res['seconds'] / 60:.1f} min.")
    return "\n".join(lines)


def _decode_tables(r: dict) -> list[str]:
    lines = [
        "Decode: one session per history length, all decoding the same forced text, "
        "interleaved token by token. Pure decode = one position against the KV cache; "
        f"refocus step = every {r['session_config']['refocus_every']} tokens (scoring, "
        f"allocator{_decode_focus(r)}, vector reads, KV recompute from the first changed "
        "entry); amortized = all measured steps / tokens.",
        "",
    ]
    rows = []
    for n, d in r["decode"].items():
        rows.append([
            _n(int(n)),
            f"{_f(r['session_open_s'][n], '{:.2f}')} "
            f"({_f(get_in(r, 'session_open_index_s', n), '{:.2f}')})",
            _f(get_in(d, "first_token", "median_ms"), "{:.0f}"),
            f"{_f(get_in(d, 'decode', 'median_ms'), '{:.2f}')} / "
            f"{_f(get_in(d, 'decode', 'p90_ms'), '{:.2f}')}",
            f"{_f(get_in(d, 'decode_cpu', 'median_ms'), '{:.2f}')} / "
            f"{_f(get_in(d, 'decode_cpu', 'p90_ms'), '{:.2f}')}",
            f"{_f(get_in(d, 'refocus_step', 'mean_ms'), '{:.0f}')} "
            f"({get_in(d, 'refocus_step', 'n') or 0})",
            ", ".join(map(str, d["refocus_recomputed_positions"])) or "–",
            f"{_f(d['amortized_ms_per_token'], '{:.2f}')} / "
            f"{_f(d['amortized_cpu_ms_per_token'], '{:.2f}')}",
            _f(get_in(d, "end_of_turn", "median_ms"), "{:.0f}"),
            "–".join(map(str, d.get("window_positions") or [])),
        ])  # fmt: skip
    lines += _table(
        ["history", "open s (index)", "first token ms", "decode ms/token wall med / p90",
         "CPU med / p90", "refocus step ms (n)", "positions recomputed",
         "amortized ms/token wall / CPU", "end of turn ms", "KV cache positions"],
        rows,
    )  # fmt: skip
    if r.get("session_open_index_keys"):
        lines.append(
            "\nRetrieval index at open, level-1 keys loaded from the tree's stored chunks / all "
            "(the rest indexed from tokens): "
            + ", ".join(
                f"{_n(int(n))} {k['stored']:,} / {k['total']:,}"
                for n, k in r["session_open_index_keys"].items()
            )
            + "."
        )
    lines += ["", f"Ratios to the {_n(int(next(iter(r['decode']))))} history:", ""]
    rows = []
    for n, d in r["decode"].items():
        rat = d["ratio_vs_smallest"]
        rows.append([_n(int(n))] + [_f(rat.get(k), "{:.3f}") for k in RATIOS])
    return lines + _table(["history", *RATIOS], rows)


def _decode_focus(r: dict) -> str:
    """How the allocator treats a refocus while decoding, where the results record it."""
    tau = r["session_config"].get("decode_tau")
    if tau is None:
        return ""
    weight = get_in(r, "focus_config", "recompute_weight")
    return f" expanding only wants above decode_tau = {tau}" + (
        "" if weight is None else f", recompute_weight = {weight}"
    )


def _refocus_table(r: dict) -> list[str]:
    lines = ["", "Refocus steps for queries from random places of the history (median "
             "ms; edits and positions recomputed per step):", ""]  # fmt: skip
    rows = []
    for sc, per in r["refocus"].items():
        for n, v in per.items():
            rows.append([
                sc, _n(int(n)),
                _f(get_in(v, "score_ms", "median_ms")),
                _f(get_in(v, "retrieval_ms", "median_ms")),
                _f(get_in(v, "allocate_read_ms", "median_ms")),
                _f(get_in(v, "recompute_ms", "median_ms"), "{:.0f}"),
                _f(get_in(v, "total_ms", "median_ms"), "{:.0f}"),
                _f(get_in(v, "total_cpu_ms", "median_ms"), "{:.0f}"),
                ", ".join(map(str, v["edits"])),
                ", ".join(map(str, v["positions_recomputed"])),
                _f(v.get("recompute_ms_per_position"), "{:.2f}"),
            ])  # fmt: skip
    return lines + _table(
        ["scorer", "history", "score", "retrieval", "allocate + read", "KV recompute",
         "total wall", "total CPU", "edits", "positions", "recompute ms / position"],
        rows,
    )  # fmt: skip


def _ingest_table(ing: dict, chunk: int) -> list[str]:
    lines = ["", "Ingest through `Session.append_ids` (GistNet + store + retrieval "
             f"index), {chunk:,}-token commits, local and S3 "
             "alternating chunk by chunk:", ""]  # fmt: skip
    rows = []
    for b in ("local", "s3"):
        if b in ing:
            v = ing[b]
            rows.append([
                b, f"{v['tokens']:,}", f"{v['tokens_per_s']:,.0f}", f"{v['gist_s']:.1f}",
                f"{v['store_s']:.2f}", f"{v['store_tokens_per_s']:,.0f}",
                f"{v['index_s']:.2f}", f"{v['puts']:,}", f"{v['bytes_stored']:,}",
            ])  # fmt: skip
    lines += _table(
        ["backend", "tokens", "tokens/s", "GistNet s", "store s", "store tokens/s",
         "index s", "PUTs", "bytes stored"],
        rows,
    )  # fmt: skip
    if "s3_over_local" in ing:
        rr = ing["s3_over_local"]
        lines.append(
            f"\nS3 / local: {rr['tokens_per_s']:.2f}x tokens/s overall, "
            f"{rr['store_tokens_per_s']:.2f}x for the store alone."
        )
    return lines


def _bytes_table(r: dict) -> list[str]:
    kv = r["kv_bytes_per_token"]
    lines = ["", f"Bytes on storage (listing the tree) vs the full KV cache of the same "
             f"history ({kv['fp16/bf16']:,} B/token in fp16/bf16, {kv['fp32']:,} in fp32):",
             ""]  # fmt: skip
    # trees that store their retrieval index: how much of the bytes it is
    index = any("retrieval index" in v["by_kind"] for v in r["bytes"].values())
    rows = []
    for n, v in r["bytes"].items():
        rows.append([
            _n(int(n)), f"{v['total']:,}", f"{v['bytes_per_token']:.1f}",
            f"{v['bytes_per_million_tokens'] / 2**20:.1f} MiB",
            _size(v["kv_fp16_bytes"]), f"{v['kv_over_tree_fp16']:,.0f}x",
            f"{v['kv_over_tree_fp32']:,.0f}x",
        ] + ([f"{v['by_kind'].get('retrieval index', 0):,}"] if index else []))  # fmt: skip
    lines += _table(
        ["history", "bytes", "bytes/token", "per 1M tokens", "KV cache fp16",
         "KV / tree (fp16)", "KV / tree (fp32)"] + (["of which retrieval index"] if index else []),
        rows,
    )  # fmt: skip
    big = str(max(int(n) for n in r["bytes"]))
    kinds = sorted(r["bytes"][big]["by_kind"].items(), key=lambda x: -x[1])
    lines.append(f"\nAt {_n(int(big))}: " + ", ".join(f"{k} {v:,} B" for k, v in kinds) + ".")
    return lines


def _rss_table(rss: dict, tokens: int) -> list[str]:
    lines = ["", "Memory of a fresh process that loads the model, opens the tree and "
             f"chats ({tokens} tokens):", ""]  # fmt: skip
    rows = []
    for n, v in rss.items():
        if "error" in v:
            rows.append([_n(int(n)), f"error: {v['error']}", "", "", "", "", ""])
            continue
        rows.append([
            _n(int(n)), _f(v["rss_model_mib"], "{:.0f}"), _f(v["rss_open_mib"], "{:.0f}"),
            _f(v["rss_chat_max_mib"], "{:.0f}"), _f(v["hwm_mib"], "{:.0f}"),
            f"{v.get('store_cache_entries', 0):,} / {_size(v.get('store_cache_bytes', 0))}",
            f"{v.get('index_blocks', v.get('index_vectors', 0)):,} / {_size(v.get('index_bytes', 0))}",
        ])  # fmt: skip
    return lines + _table(
        ["history", "RSS after model load MiB", "after session open", "max during chat",
         "peak (VmHWM)", "store LRU entries / bytes", "retrieval index vectors / bytes"],
        rows,
    )  # fmt: skip
