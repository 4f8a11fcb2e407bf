"""python -m bench store [...]  ->  bench.store_bench."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "store":
    from bench.store_bench import main

    main(sys.argv[2:])
else:
    print("usage: python -m bench store [--quick] [--epochs ...]")
