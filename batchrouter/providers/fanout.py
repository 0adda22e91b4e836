"""Sync fan-out: bounded concurrency per lane on one long-lived event loop per process.

The loop runs in a daemon thread so dispatch (plain synchronous code) can hand it a chunk and
wait; async SDK clients are cached on it, keyed by where they point, so connections are reused
from chunk to chunk instead of being set up again for every 100 items. `stream` hands results
back as they finish, so dispatch writes one batch of results while the next calls are in
flight: the lane's window stays full instead of draining at every chunk boundary.
"""
from __future__ import annotations

import asyncio
import atexit
import os
import queue
import threading
import time

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


@atexit.register
def close_clients() -> None:
    """Close the cached clients' connections while the loop still runs (aiohttp otherwise
    complains about unclosed sessions from the garbage collector at interpreter exit)."""
    loop, cached = _loop, list(_clients.values())
    _clients.clear()
    if loop is None or not loop.is_running() or not cached:
        return

    async def close_all():
        for found in cached:
            await found.close()

    try:
        asyncio.run_coroutine_threadsafe(close_all(), loop).result(timeout=5)
    except Exception:  # noqa: BLE001, S110 - best effort on the way out
        pass


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


def stream(calls, limit: int, batch: int, interval: float = 0.05):
    """Run the calls (zero-argument coroutine functions) on the fan-out loop, `limit` in
    flight, and yield their results in lists as they finish: `batch` at a time, or what
    finished within `interval` of the first one waiting. Closing the generator early (a lost
    lease) cancels the calls still running."""
    calls = list(calls)
    finished: queue.SimpleQueue = queue.SimpleQueue()
    future = asyncio.run_coroutine_threadsafe(_feed(calls, limit, finished), _running_loop())
    left = len(calls)
    try:
        while left:
            got = [_next_result(finished, future)]
            until = time.monotonic() + interval
            while len(got) < min(batch, left) and (wait := until - time.monotonic()) > 0:
                try:
                    got.append(finished.get(timeout=wait))
                except queue.Empty:
                    break
            left -= len(got)
            yield got
    finally:
        future.cancel()


def _next_result(finished: queue.SimpleQueue, future):
    while True:
        try:
            return finished.get(timeout=1.0)
        except queue.Empty:
            if future.done():  # the feed ended without handing over every result
                if not finished.empty():
                    continue
                future.result()
                raise RuntimeError("fan-out ended with calls unaccounted for")


async def _feed(calls, limit: int, finished: queue.SimpleQueue) -> None:
    async def handed_over(call):
        finished.put(await call())

    await run_bounded([lambda c=c: handed_over(c) for c in calls], limit)


class SyncFanout:
    """The sync half of an HTTP adapter: `_call(client, model, request)` per item on the
    adapter's cached async client (`_client_key`, `_async_client`), `concurrency` at a time."""

    concurrency: int

    async def _sync_all(self, model: str, requests: list) -> list:
        return await run_bounded(self._calls(model, requests), self.concurrency)

    def stream(self, model: str, requests: list, batch: int = 64):
        """Results in lists as the calls finish (see `stream` above)."""
        return stream(self._calls(model, requests), self.concurrency, batch)

    def _calls(self, model: str, requests: list) -> list:
        key = self._client_key()
        return [lambda r=r: self._call(client(key, self._async_client), model, r)
                for r in requests]
