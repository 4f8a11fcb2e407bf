"""python -m bench store|systems [...]  ->  bench.store_bench / bench.systems."""

import sys

COMMANDS = {"store": "bench.store_bench", "systems": "bench.systems"}

if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
    import importlib

    importlib.import_module(COMMANDS[sys.argv[1]]).main(sys.argv[2:])
else:
    print("usage: python -m bench {store|systems} [--quick] [...]")
