"""Benchmarks and the evaluation harness: ``python -m bench <name>`` or ``mc bench <name>``."""

COMMANDS = {  # name -> module with a main(argv)
    "store": "bench.store_bench",
    "harness": "bench.harness",
    "memory": "bench.memory",
    "index": "bench.index_cost",
    "systems": "bench.systems",
    "footprint": "bench.systems.footprint",  # storage by kind only, without the latency runs
    "serve": "bench.serve",  # `mc serve`: requests/s and latency over HTTP
    "bulk": "bench.bulk",  # `mc ingest --dask`: tokens/s serial vs 1 and 2 workers, scaling model
    "explorer": "bench.explorer",  # the web explorer's first view of a 1M-token memory
    "locomo": "bench.locomo",  # LoCoMo conversations: F1 per category against RAG and an oracle
    "locomo-recall": "bench.locomo_recall",  # LoCoMo: evidence shown by mc and BM25, no answers
    "locomo-turns": "bench.locomo_turns",  # LoCoMo: BM25 turn rankings with the turn before
    "speed": "bench.speed",  # answers against llama.cpp on the same GGUF and threads
}
