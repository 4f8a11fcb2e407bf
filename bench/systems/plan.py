"""What a run measures: history lengths, turns, repetitions and sizes (``Plan``), the full and
the quick plan, and the fixed inputs every session shares (the question, the forced answer)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench._common import ROOT

RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "tmp" / "systems"  # built trees, reused across runs
MODELS = ("smollm2", "tiny")
SCORERS = ("recency", "similarity", "attention")
INGEST_CHUNK = 32768  # what `mc ingest` commits per append (mcruntime.ingest.CHUNK_TOKENS)
BUILD_CHUNK = 1 << 17  # tokens per append while building the cached trees
# the decoded text: forced token by token, so every history length does the same work
FORCED_TEXT = (
    "The results are summarised below, one table per benchmark, with the machine they ran on "
    "and the command that produced them, so anyone can check every number again. "
)
QUESTION = "Summarise what you remember of the documents above, in detail."
TARGET_RATIO = 1.1  # docs/architecture.md#focus (constant cost) / issue 4: 1M within 1.1x of 8k
# issue 11: a whole chat turn per token at 1.56M tokens of history vs 61k, tiny model, window 512
FLAT_HISTORIES = [61_440, 1_560_576]


@dataclass
class Plan:
    histories: dict[str, list[int]]  # model -> history lengths (tokens)
    window: int = 2048
    rounds: dict[str, int] = field(default_factory=dict)  # model -> chat turns per session
    new_tokens: int = 72  # tokens decoded per turn (refocus after 32 and 64)
    warmup: int = 3  # decode steps after the first token left out of the statistics
    refocus_reps: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> scorer -> n
    ingest_tokens: dict[str, int] = field(default_factory=dict)
    ingest_chunk: int = INGEST_CHUNK
    rss: bool = True
    rss_tokens: int = 40
    s3: bool = True
    # flat cost (``flat``): whole ``Session.ask`` turns per token at a small and a large history
    flat_histories: dict[str, list[int]] = field(default_factory=dict)  # model -> lengths
    flat_window: int = 512
    flat_tokens: int = 64  # tokens per answer (a refocus after 32 and 64)
    flat_turns: int = 20  # turns per session, alternating between the sessions
    flat_warmup: int = 1  # first turns left out of the medians (cold caches, one-time reads)
    flat_segment: int = 512  # tokens per append building its trees: one segment each


FULL = Plan(
    histories={
        "smollm2": [8_000, 64_000, 1_000_000],
        "tiny": [8_000, 64_000, 1_000_000, 10_000_000],
    },
    rounds={"smollm2": 3, "tiny": 6},
    refocus_reps={
        "smollm2": {"recency": 3, "similarity": 3, "attention": 1},
        "tiny": {"recency": 8, "similarity": 8, "attention": 8},
    },
    ingest_tokens={"smollm2": 262_144, "tiny": 1_048_576},
    flat_histories={"tiny": FLAT_HISTORIES},
)
QUICK = Plan(
    histories={"smollm2": [8_000, 64_000], "tiny": [8_000, 64_000, 1_000_000]},
    rounds={"smollm2": 1, "tiny": 3},
    new_tokens=40,
    refocus_reps={
        "smollm2": {"recency": 1, "similarity": 1},  # attention: ~40 s and ~4 GB a step
        "tiny": {"recency": 4, "similarity": 4, "attention": 4},
    },
    ingest_tokens={"smollm2": 65_536, "tiny": 262_144},
    rss_tokens=24,
    flat_histories={"tiny": FLAT_HISTORIES},
    flat_turns=10,
)
