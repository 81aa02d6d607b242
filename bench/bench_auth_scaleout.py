"""Per-request cost of the shared auth backends against the embedded ones, same run.

- ``verify``: ``ApiKeyStore.verify`` of a valid key (what every authenticated request
  does): SQLite file (``KeyStore``) vs PostgreSQL (``PgKeyStore``, pooled connection);
- ``take``: ``RateLimiter.take`` of one key (every authenticated request with
  ``auth.rate_limit``): in process (``TokenBuckets``) vs Redis (``RedisTokenBuckets``,
  one Lua script call);
Keys and requests are SYNTHETIC (a benchmark of overhead, no quality claim). The backends
take turns (same machine load); prints medians (µs) and p99 and writes
``bench/results/auth_scaleout.json``.
Usage: ``python bench/bench_auth_scaleout.py [--n 2000]
[--pg postgresql://postgres@127.0.0.1:5432/test] [--redis redis://127.0.0.1:6379/0]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import redis

from shopcast.api.ratelimit import RedisTokenBuckets, TokenBuckets
from shopcast.config import Settings
from shopcast.online import connect
from shopcast.privacy._apikeys_pg import PgKeyStore
from shopcast.privacy.apikeys import KeyStore

RESULTS = Path(__file__).parent / "results" / "auth_scaleout.json"


def timed(fn: Callable[[], object], n: int) -> dict[str, float]:
    for _ in range(min(100, n)):
        fn()  # warm up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e6)
    times.sort()
    return {
        "median_us": round(statistics.median(times), 1),
        "p99_us": round(times[int(0.99 * (len(times) - 1))], 1),
        "n": n,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    schema = f"bench_auth_{uuid.uuid4().hex[:10]}"
    prefix = f"bench-auth:{uuid.uuid4().hex[:10]}:"
    pg_url = f"{args.pg}?options=-csearch_path%3D{schema}"
    redis_url = f"{args.redis}?prefix={prefix}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    out: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sqlite_keys = KeyStore(Path(tmp) / "keys.db")
            pg_keys = PgKeyStore(pg_url)
            s_token = sqlite_keys.create(["read"])[1]
            p_token = pg_keys.create(["read"])[1]
            state = Settings(environment="test", state={"url": redis_url}).state
            memory = TokenBuckets(1e9, 10**9)
            shared = RedisTokenBuckets(connect(state), 1e9, 10**9)
            out["verify"] = {
                "sqlite": timed(lambda: sqlite_keys.verify(s_token), args.n),
                "postgresql": timed(lambda: pg_keys.verify(p_token), args.n),
            }
            out["take"] = {
                "memory": timed(lambda: memory.take("k"), args.n),
                "redis": timed(lambda: shared.take("k"), args.n),
            }
            sqlite_keys.close()
            pg_keys.close()
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        client = redis.Redis.from_url(args.redis)
        found = list(client.scan_iter(match=f"{prefix}*"))
        if found:
            client.delete(*found)
        client.close()
    out["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    out["command"] = f"python bench/bench_auth_scaleout.py --n {args.n}"
    for part, arms in out.items():
        if part in ("machine", "command"):
            continue
        for arm, fig in arms.items():
            med, p99 = fig["median_us"], fig["p99_us"]
            print(f"{part:7s} {arm:12s} median {med:9.1f} µs  p99 {p99:9.1f} µs")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
