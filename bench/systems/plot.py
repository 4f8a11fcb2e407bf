"""The plot: decode latency per token vs history length, one panel per model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.systems.report import get_in


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(res["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        r = res["models"][model]
        ns = [int(n) for n in r["decode"]]
        ds = [r["decode"][str(n)] for n in ns]
        series = [
            ("decode step, wall median", "o-", [get_in(d, "decode", "median_ms") for d in ds]),
            ("decode step, wall p90", "v:", [get_in(d, "decode", "p90_ms") for d in ds]),
            ("decode step, CPU median", "^-", [get_in(d, "decode_cpu", "median_ms") for d in ds]),
            ("amortized incl. refocus, wall", "s--", [d["amortized_ms_per_token"] for d in ds]),
        ]
        top = 0.0
        for label, style, ys in series:
            ax.plot(ns, [np.nan if y is None else y for y in ys], style, label=label)
            top = max([top] + [y for y in ys if y is not None])
        for n, d in zip(ns, ds, strict=True):
            pos = d["refocus_recomputed_positions"]
            if d["amortized_ms_per_token"] is not None:
                ax.annotate(
                    f"{sum(p > 1 for p in pos)}/{len(pos)} refocus\nrecomputed",
                    (n, d["amortized_ms_per_token"]),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=7,
                )
        ax.set_xscale("log")
        ax.set_ylim(0, top * 1.2 or 1)
        ax.set_xlabel("history length (tokens)")
        ax.set_ylabel("ms per token")
        ax.set_title(f"{r['base']}, window {res['plan']['window']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig.suptitle("Decode latency per token vs history length (1 CPU thread)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
