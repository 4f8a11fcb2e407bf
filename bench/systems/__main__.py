"""python -m bench.systems: the same as ``python -m bench systems``."""

from bench.systems import main

main()
