"""B4 / B4z / B11 (../shared/reference/performance.md): sync-lane fan-out through the real
OpenAI adapter against a loopback OpenAI-compatible server.

    .venv/bin/python bench/fanout.py [--items 10000] [--concurrency 256] [--latency-ms 200]

A stub server (asyncio, its own process) answers chat completions after the given latency.
Two worker processes each push half the items through the adapter as dispatch does: chunks of
`dispatch.chunk_size` items streamed with the lane's window kept full, results handed back as
they finish (normalized into ItemResults; the database write is not part of this figure —
bench/pipeline.py's sync-lane run measures dispatch end to end). Failed items (429s) are sent
again in the next chunk, as dispatch's retry would. Printed per transport:
items/s and its ratio to the concurrency ÷ latency ceiling; CPU per item at 0 ms latency; the
added p50 latency of one item through the adapter over a direct SDK call; the throughput with
2 % 429s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import socket
import statistics
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

BODY = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 0,
                   "model": "bench-model",
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "ok"}}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 1,
                             "total_tokens": 6}}).encode()
LIMITED = b'{"error": {"message": "rate limited", "type": "requests"}}'


def serve(port: int, latency: float, fail_every: int) -> None:
    """A minimal keep-alive HTTP/1.1 server speaking the chat completions wire format."""
    count = 0

    async def handle(reader, writer):
        nonlocal count
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                if latency:
                    await asyncio.sleep(latency)
                count += 1
                if fail_every and count % fail_every == 0:
                    status, body, extra = b"429 Too Many Requests", LIMITED, b"retry-after-ms: 0\r\n"
                else:
                    status, body, extra = b"200 OK", BODY, b""
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                             + extra + b"Content-Length: " + str(len(body)).encode()
                             + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def work(url: str, items: int, concurrency: int, transport: str, out, go) -> None:
    from batchrouter.dispatch import CHUNK, Settings, chunk_size
    from batchrouter.providers import Connection, ProviderSettings, connect
    from batchrouter.providers.base import ItemRequest

    provider = connect("bench", Connection("compatible", url, "sk-bench"), concurrency, 30.0,
                       transport)
    todo = [ItemRequest(f"itm_{i}", f"c{i}", "responses", "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": f"question {i}"}],
                         "max_tokens": 8}) for i in range(items)]
    size = chunk_size(Settings(providers=ProviderSettings(concurrency=concurrency)),
                      SimpleNamespace(provider="bench"), streams=True)
    out.put("ready")  # imports done: only the dispatching is timed
    go.wait()
    started = time.perf_counter()
    cpu = time.process_time()
    done = 0
    while todo:
        chunk, todo = todo[:size], todo[size:]
        for results in provider.stream("bench-model", chunk, max(CHUNK // 2, concurrency // 2)):
            failed = {r.item_id for r in results if not r.ok}
            done += len(results) - len(failed)
            todo += [r for r in chunk if r.item_id in failed]
    out.put((done, time.perf_counter() - started, time.process_time() - cpu))


def run(items: int, concurrency: int, latency_ms: int, transport: str, workers: int = 2,
        fail_every: int = 0) -> dict:
    port = free_port()
    server = mp.Process(target=serve, args=(port, latency_ms / 1000, fail_every), daemon=True)
    server.start()
    time.sleep(0.5)
    url = f"http://127.0.0.1:{port}/v1"
    out, go = mp.Queue(), mp.Event()
    procs = [mp.Process(target=work, args=(url, items // workers, concurrency, transport, out,
                                           go)) for _ in range(workers)]
    for p in procs:
        p.start()
    assert [out.get() for _ in procs] == ["ready"] * workers
    started = time.perf_counter()
    go.set()
    stats = [out.get() for _ in procs]
    wall = time.perf_counter() - started
    for p in procs:
        p.join()
    server.terminate()
    done = sum(s[0] for s in stats)
    return {"items": done, "wall_s": round(wall, 2), "items_per_s": round(done / wall),
            "cpu_ms_per_item": round(sum(s[2] for s in stats) * 1000 / done, 3)}


def added_latency(transport: str, samples: int = 300) -> dict:
    """p50 of one item through the adapter minus p50 of a direct SDK call (0 ms server)."""
    import openai

    from batchrouter.providers import Connection, connect
    from batchrouter.providers.base import ItemRequest

    port = free_port()
    server = mp.Process(target=serve, args=(port, 0.0, 0), daemon=True)
    server.start()
    time.sleep(0.5)
    url = f"http://127.0.0.1:{port}/v1"
    direct = openai.OpenAI(api_key="sk-bench", base_url=url, max_retries=0)
    provider = connect("bench", Connection("compatible", url, "sk-bench"), 1, 30.0, transport)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    d, a = [], []
    for i in range(samples):
        t = time.perf_counter()
        direct.chat.completions.create(model="bench-model", **body)
        d.append(time.perf_counter() - t)
        t = time.perf_counter()
        provider.submit("bench-model", "sync", [ItemRequest(f"i{i}", "c", "responses",
                                                            "/v1/chat/completions", body)])
        a.append(time.perf_counter() - t)
    server.terminate()
    return {"direct_p50_ms": round(statistics.median(d) * 1000, 2),
            "adapter_p50_ms": round(statistics.median(a) * 1000, 2),
            "added_p50_ms": round((statistics.median(a) - statistics.median(d)) * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--transports", default="wire,aiohttp,httpx")
    args = parser.parse_args()
    # Total concurrency across the two workers ÷ latency (1,280/s at 256 and 200 ms).
    reference = args.concurrency / (args.latency_ms / 1000)
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    for transport in args.transports.split(","):
        b4 = run(args.items, args.concurrency // 2, args.latency_ms, transport)
        b4z = run(args.items, args.concurrency // 2, 0, transport)
        limited = run(args.items, args.concurrency // 2, args.latency_ms, transport,
                      fail_every=50)
        b11 = added_latency(transport)
        print(json.dumps({
            "benchmark": "fanout", "transport": transport, "concurrency": args.concurrency,
            "latency_ms": args.latency_ms,
            "B4_items_per_s": b4["items_per_s"],
            "B4_ratio_to_ceiling": round(b4["items_per_s"] / reference, 3),
            "B4z_items_per_s": b4z["items_per_s"],
            "B4z_cpu_ms_per_item": b4z["cpu_ms_per_item"],
            "with_2pct_429_items_per_s": limited["items_per_s"],
            "429_throughput_drop": round(1 - limited["items_per_s"] / b4["items_per_s"], 3),
            **{f"B11_{k}": v for k, v in b11.items()}}))


if __name__ == "__main__":
    main()
