"""B1/B2/B8: preflight, upload and quote of a 100,000-item manifest; peak RSS at 1,000,000.

Prints comparable figures; targets (2-core machine): preflight < 0.5 s, upload < 2 s,
quote < 1.5 s for 100k items; peak RSS < 256 MB for a 1M-item upload.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.common import bench_app, row, timed, tmpdir, write_manifest

N = int(os.environ.get("BENCH_ITEMS", "100000"))
BIG = int(os.environ.get("BENCH_BIG_ITEMS", "1000000"))


def preflight_figures(path: str, app) -> dict:
    from batchrouter import manifest, quotes

    results = {}
    with open(path, "rb") as fh:
        lines = fh.readlines()
    with timed(results, "orjson"):
        for line in lines:
            orjson.loads(line)
    with app.app_context(), app.extensions["batchrouter"].db.session() as s:
        models = quotes.model_operations(s)
    limits = manifest.Limits()
    best = None
    for _ in range(3):
        start = time.perf_counter()
        report = manifest.scan(lines, models, limits)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    assert report.ok and report.item_count == N, report.errors[:3]
    results["preflight"] = best
    return results


def serve(app, port: int):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def api_figures(path: str, app, secret: str) -> dict:
    import requests

    results = {}
    server = serve(app, 0)
    base = f"http://127.0.0.1:{server.server_port}"
    headers = {"Authorization": f"Bearer {secret}"}
    with timed(results, "upload"), open(path, "rb") as fh:
        response = requests.post(f"{base}/v1/batches/input-manifests", data=fh,
                                 headers=headers | {"Content-Type": "application/x-ndjson"})
    assert response.status_code == 201 and response.json()["status"] == "processed", \
        response.text[:500]
    file_id = response.json()["id"]
    with timed(results, "quote"):
        response = requests.post(f"{base}/v1/quotes/model", json={"input_file_id": file_id},
                                 headers=headers)
    assert response.status_code == 201, response.text[:500]
    results["quote_lanes"] = len(response.json()["quote_lanes"]["selected"])
    server.shutdown()
    return results


RSS_CHILD = r"""
import sys


def hwm_kb():
    # VmHWM: this process's own peak (ru_maxrss would include the forking parent's peak).
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

sys.path.insert(0, sys.argv[3])
from bench.common import bench_app
app, secret, ws = bench_app(sys.argv[2], BATCHROUTER_MAX_ITEMS=2_000_000,
                            BATCHROUTER_MAX_MANIFEST_BYTES=4 * 1024**3)
from batchrouter import files, quotes
from batchrouter.extensions import manifest_limits
with app.app_context():
    rt = app.extensions["batchrouter"]
    base = hwm_kb()
    with rt.db.session() as s, open(sys.argv[1], "rb") as fh:
        record, report = files.store_manifest(
            s, rt.storage, workspace_id=ws, mode="live", stream=fh, filename="big.jsonl",
            purpose="batch", models=quotes.model_operations(s), limits=manifest_limits())
    assert report.ok, report.errors[:3]
    peak = hwm_kb()
print(f"{base} {peak} {report.item_count}")
"""


def rss_figures(tmp: str) -> dict:
    path = f"{tmp}/big.jsonl"
    size = write_manifest(path, BIG, seed=11)
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, path, f"{tmp}/rss",
                          str(Path(__file__).resolve().parent.parent)],
                         capture_output=True, text=True, check=True)
    base, peak, count = map(int, out.stdout.split())
    os.remove(path)
    return {"big_bytes": size, "rss_base_mb": base / 1024, "rss_peak_mb": peak / 1024,
            "big_items": count}


def main() -> None:
    tmp = tmpdir()
    os.makedirs(f"{tmp}/rss", exist_ok=True)
    path = f"{tmp}/manifest.jsonl"
    size = write_manifest(path, N)
    app, secret, _ = bench_app(tmp)
    pre = preflight_figures(path, app)
    api = api_figures(path, app, secret)
    rss = rss_figures(tmp)
    print(f"bench/quote.py — {N:,} items, {size / 1e6:.1f} MB, five models")
    print(row("bare orjson.loads of every line", f"{pre['orjson']:.3f} s"))
    print(row("preflight (manifest.scan, domain function)", f"{pre['preflight']:.3f} s",
              "target < 0.5 s", pre["preflight"] < 0.5))
    print(row("upload through POST /v1/batches/input-manifests", f"{api['upload']:.3f} s",
              "target < 2 s", api["upload"] < 2))
    print(row("quote through POST /v1/quotes/model (file)", f"{api['quote']:.3f} s",
              "target < 1.5 s", api["quote"] < 1.5))
    print(row(f"upload of {rss['big_items']:,} items ({rss['big_bytes'] / 1e6:.0f} MB): "
              "peak RSS", f"{rss['rss_peak_mb']:.0f} MB", "target < 256 MB",
              rss["rss_peak_mb"] < 256))
    print(row("  (RSS after start-up, before the upload)", f"{rss['rss_base_mb']:.0f} MB"))


if __name__ == "__main__":
    main()
