"""python -m bench <name> [...]: the benchmarks and the evaluation harness."""

import importlib
import sys

COMMANDS = {
    "store": "bench.store_bench",
    "harness": "bench.harness",
    "systems": "bench.systems",
    "footprint": "bench.systems.footprint",  # storage by kind only, without the latency runs
}

if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    print("usage: python -m bench {" + ",".join(COMMANDS) + "} [--quick] [...]")
    sys.exit(2)
sys.exit(importlib.import_module(COMMANDS[sys.argv[1]]).main(sys.argv[2:]) or 0)
