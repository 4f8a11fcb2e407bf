"""How `mc serve` runs model work: one lock per memory name (held from the moment work is
queued until it finished, even if the client went away) and a thread pool of
``ServeConfig.concurrency`` threads, so different memories run in parallel up to that many."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class _NameLocks:
    """One ``asyncio.Lock`` per memory name, kept only while some request holds or waits for
    it: the map holds the memories with work queued or running, never every name ever asked
    for. Used on the event loop only."""

    def __init__(self) -> None:
        self._held: dict[str, list] = {}  # name -> [lock, requests holding or waiting]

    async def acquire(self, name: str) -> None:
        entry = self._held.setdefault(name, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            await entry[0].acquire()
        except BaseException:  # the request went away while it waited
            self._leave(name, entry)
            raise

    def release(self, name: str) -> None:
        entry = self._held[name]
        entry[0].release()
        self._leave(name, entry)

    def _leave(self, name: str, entry: list) -> None:
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[name]

    def locked(self, name: str) -> bool:
        entry = self._held.get(name)
        return entry is not None and entry[0].locked()

    @property
    def names(self) -> list[str]:
        return sorted(self._held)


class Scheduler:
    """The pool and the per-name locks; ``after(name)`` runs on the event loop when work on
    ``name`` is done (``Memories`` closes idle sessions there)."""

    def __init__(self, threads: int, after: Callable[[str], None] | None = None):
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="mc-serve")
        self.locks = _NameLocks()
        self.after = after

    async def submit(self, name: str, fn: Callable, *args) -> asyncio.Future:
        """Run ``fn(*args)`` on the pool once no other work on ``name`` runs; the memory stays
        locked until ``fn`` returns, whatever happens to the request that asked for it."""
        await self.locks.acquire(name)
        try:
            fut = asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        except BaseException:
            self.locks.release(name)
            raise

        def done(_):
            self.locks.release(name)
            if self.after is not None:
                self.after(name)

        fut.add_done_callback(done)
        return fut

    async def read(self, fn: Callable, *args):
        """Run work that takes no lock."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def locked(self, name: str) -> bool:
        return self.locks.locked(name)

    @property
    def names(self) -> list[str]:
        """The names with work queued or running."""
        return self.locks.names

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
