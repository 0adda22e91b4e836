"""Bounded concurrency for sync lanes: at most `limit` requests of a chunk in flight."""
from __future__ import annotations

import asyncio


async def run_bounded(calls, limit: int) -> list:
    """Await every call (zero-argument coroutine functions), `limit` at a time, in order."""
    gate = asyncio.Semaphore(max(1, limit))

    async def one(call):
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))
