"""Systems benchmarks: what MegaContext costs, measured side by side in one run.

    python -m bench systems [--quick] [--flat-only] [--out-dir bench/results]

1. **Decode latency per token vs history length** (the constant-compute claim): one session per
   history length, all open at once, decoding *interleaved* token by token through the real
   ``Session.chat_stream`` path, so a busy neighbour slows every length alike. The decoded tokens
   are forced (a fixed piece of held-out text; EOS never wins) so every length does the same work.
   Each step is classified: a pure decode step (one position against the KV cache), a refocus
   step (every ``refocus_every`` tokens: scoring + allocator + reading vectors + recomputing the
   KV cache from the first changed entry), the first token (focus rounds + prefill) and the end
   of the turn (question and answer appended to the tree). (``decode``, ``probe``)
2. **Refocus latency per scorer** (recency, similarity, attention), split into scoring,
   retrieval assist, allocator + vector reads, and KV recompute, with the positions recomputed.
   (``refocus``)
3. **Ingest tokens/s**, local disk vs S3 (a moto server in its own process on 127.0.0.1),
   chunk by chunk alternately, with the time spent in GistNet, the store and the retrieval index
   apart. (``ingest``)
4. **Bytes stored per million tokens** (listing the tree's objects) vs the base model's full KV
   cache for the same history. (``footprint``)
5. **Memory**: RSS of a fresh process (``--rss-child``) that loads the model, opens the tree and
   chats, at each history length. (``footprint``)
6. **Flat cost of a chat turn**: whole ``Session.ask`` turns (question focus, decode with its
   refocus steps, focus report, both turns appended to the tree) per token at a small and a
   large history made of many small segments, sessions taking turns; ratio large / small of the
   turn, the decode loop, the model and the runtime's own work (turn - model). ``--flat-only``
   runs it alone in a few minutes (``flat_cost.json``, ``flat_cost.md``). (``flat``)

Trees are real: token ids appended through ``Session.append_ids`` in large chunks, every gist
made by GistNet (untrained: the cost is the same), the retrieval index stored with the tree as
the runtime stores it. They are built once into ``bench/results/tmp/systems/`` and reused
(forked per run, so the cached tree never changes). (``trees``)
Writes ``systems.json``, ``systems.md`` and ``systems_latency.png`` under the output folder.
(``report``, ``plot``; the run and its command line: ``runner``; what runs: ``plan``)
"""

import os

# before numpy and torch load (where this package is what loads them): one thread everywhere
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # (HF_HUB_OFFLINE: mcmodels.base)

from bench.systems.plan import FULL, QUICK, Plan
from bench.systems.runner import main, run

__all__ = ["FULL", "QUICK", "Plan", "main", "run"]
