"""A purge killed by SIGKILL at its N-th change (tests/store/test_purge.py).

python -m tests.store._purger URL N before|after changes|any
"""

from __future__ import annotations

import sys

import mcstore
from mcstore.testing import KillAfter

if __name__ == "__main__":
    url, n, when, what = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    be = KillAfter(mcstore.backend_for(url), n, after=when == "after", every_op=what == "any")
    mcstore.purge(be, drop_tags=True, grace=0, no_live_writers=True)
    print("done")
