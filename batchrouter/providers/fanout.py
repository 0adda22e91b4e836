"""Sync fan-out: bounded concurrency per lane on one long-lived event loop per process.

The loop runs in a daemon thread so dispatch (plain synchronous code) can hand it a chunk and
wait; async SDK clients are cached on it, keyed by where they point, so connections are reused
from chunk to chunk instead of being set up again for every 100 items.
"""
from __future__ import annotations

import asyncio
import os
import threading

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_clients: dict = {}


def _running_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or not _loop.is_running():
            _loop = asyncio.new_event_loop()
            _clients.clear()
            ready = threading.Event()

            def serve(loop=_loop):
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=serve, name="provider-fanout", daemon=True).start()
            ready.wait()
        return _loop


def _forget_loop_in_child() -> None:
    """A forked child (an RQ work horse, a bench worker) inherits the loop object but not the
    thread running it: waiting on it would hang forever, so the child starts its own."""
    global _loop, _lock
    _loop, _lock = None, threading.Lock()
    _clients.clear()


os.register_at_fork(after_in_child=_forget_loop_in_child)


def run(coro):
    """Run a coroutine on the fan-out loop and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, _running_loop()).result()


def client(key: tuple, factory):
    """The cached async client for `key`, made by `factory()` on the fan-out loop."""
    found = _clients.get(key)
    if found is None:
        found = _clients[key] = factory()
    return found


async def run_bounded(calls, limit: int) -> list:
    """Await every call (zero-argument coroutine functions), `limit` at a time, in order."""
    gate = asyncio.Semaphore(max(1, limit))

    async def one(call):
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))
