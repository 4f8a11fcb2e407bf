"""The Dask cluster a bulk ingest runs on: a client for a scheduler address or a local cluster,
and the one error a cluster that cannot be used raises."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mcruntime.errors import SessionError

WORKER_WAIT_S = 60  # how long a run waits for a cluster's first worker


class ClusterError(SessionError):
    """The Dask scheduler cannot be reached, or the cluster address is malformed."""

    exit_code = 13


@contextlib.contextmanager
def dask_client(address: str) -> Iterator:
    """A ``distributed.Client`` for ``address``: a scheduler address (``tcp://host:8786``) or
    ``local:N``, a cluster of N single-threaded worker processes on 127.0.0.1 that lives as
    long as the ``with`` block."""
    from distributed import Client, LocalCluster

    if address.startswith("local:"):
        n = address[6:]
        if not n.isdigit() or int(n) < 1:
            raise ClusterError(f"cluster {address!r}: use local:N with N >= 1 workers")
        with (
            LocalCluster(
                n_workers=int(n),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {e}") from None
    with client:
        yield client


def wait_for_workers(client) -> int:
    """The number of workers once there is one: a scheduler without workers would leave every
    task waiting."""
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise ClusterError(
            f"the Dask cluster at {client.scheduler.address} has no workers "
            f"(waited {WORKER_WAIT_S} s); start some, or use --dask local:N"
        ) from None
    return len(client.scheduler_info().get("workers", {}))
