"""Serving latency (simple sequential loop) and HTTP ingestion throughput.

Starts `shopcast serve` in a separate process over a store holding the real UCI Online
Retail data (imported by `shopcast demo --once` into a temporary directory unless
--data-dir points at an existing demo directory), then:

- recommendation latency: N sequential GET /v1/users/{id}/recommendations?k=10 for real
  customers, keep-alive, one client; p50/p95/p99 in ms, beside GET /v1/health (no-op);
- ingestion: POST /v1/events in batches of 500 (synthetic view events, labelled as such).

Prints the figures and writes bench/results/serving.json. Figures are noisy on a
2-core machine: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=100)
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p95_ms": round(qs[94], 3),
        "p99_ms": round(qs[98], 3),
    }


def timed_gets(http: httpx.Client, paths: list[str]) -> list[float]:
    out = []
    for path in paths:
        t = time.perf_counter()
        r = http.get(path)
        out.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    data_dir = args.data_dir or Path(tmp.name) / "demo"
    shopcast = [sys.executable, "-m", "shopcast.cli"]
    if not (data_dir / "shopcast.db").exists():
        subprocess.run([*shopcast, "demo", "--once", "--data-dir", str(data_dir)], check=True)
    port = free_port()
    env = {**os.environ, "SHOPCAST_MODEL_DIR": str(data_dir / "models")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    db = f"sqlite:///{data_dir / 'shopcast.db'}"
    server = subprocess.Popen(
        [*shopcast, "serve", "--db", db, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        import polars as pl

        from shopcast.storage import open_store

        store = open_store(db)
        customers = (
            store.events.frame()
            .filter(pl.col("user_id").is_not_null())["user_id"]
            .unique()
            .sort()
            .to_list()
        )
        store.close()
        rng = random.Random(0)
        paths = [
            f"/v1/users/{rng.choice(customers)}/recommendations?k=10" for _ in range(args.requests)
        ]
        with httpx.Client(base_url=base, timeout=10) as http:
            timed_gets(http, paths[:200])  # warm-up
            health = timed_gets(http, ["/v1/health"] * args.requests)
            recs = timed_gets(http, paths)
            started = time.perf_counter()
            for b in range(args.batches):
                batch = [
                    {
                        "event_id": f"bench-{b}-{j}",
                        "type": "view",
                        "user_id": f"synthetic-{j % 97}",
                        "item_id": rng.choice(["85123A", "71053", "22423", "47566"]),
                    }
                    for j in range(500)
                ]
                http.post("/v1/events", json=batch).raise_for_status()
            ingest_s = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait()
    results = {
        "dataset": "uci-online-retail (real)",
        "customers": len(customers),
        "recommendations": {"n": len(recs), **percentiles(recs)},
        "health_noop": {"n": len(health), **percentiles(health)},
        "ingest_http": {
            "events": args.batches * 500,
            "batch": 500,
            "events_per_s": round(args.batches * 500 / ingest_s),
            "note": "synthetic view events",
        },
        "method": "sequential loop, one keep-alive client, separate process, loopback",
    }
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
