"""python -m bench <name> [...]: the benchmarks and the evaluation harness."""

import importlib
import sys

from bench import COMMANDS

if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    print("usage: python -m bench {" + ",".join(COMMANDS) + "} [--quick] [...]")
    sys.exit(2)
sys.exit(importlib.import_module(COMMANDS[sys.argv[1]]).main(sys.argv[2:]) or 0)
