"""Benchmarks and the evaluation harness: ``python -m bench <name>`` or ``mc bench <name>``."""

COMMANDS = {  # name -> module with a main(argv)
    "store": "bench.store_bench",
    "harness": "bench.harness",
    "memory": "bench.memory",
    "index": "bench.index_cost",
    "systems": "bench.systems",
    "footprint": "bench.systems.footprint",  # storage by kind only, without the latency runs
}
