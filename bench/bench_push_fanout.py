"""Live push across API processes (``push.fanout``): latency from the triggering event
posted to process A to the push received on an SSE stream open on process B, against
the same with the stream on A itself.

Two ``shopcast serve`` processes share one SQLite store and a local Redis
(``--redis``, a unique key prefix, deleted afterwards). The shop is SYNTHETIC
(18 items in 3 categories, no trained model: items come from the catalog fill); each
trial is a fresh user who views three items of one category (the session nudge). The
servers' pollers cannot deliver it (``live_retry_s`` and ``tick_interval_s`` are an
hour): what arrives on B came through the Redis wake-up.

Run: ``nice -n 10 .venv/bin/python bench/bench_push_fanout.py [--trials 30]``; prints the
figures and writes ``bench/results/push_fanout.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import free_port

RESULTS = Path(__file__).parent / "results" / "push_fanout.json"
CONFIG = """
[push]
min_gap = 0
tick_interval_s = 3600
live_retry_s = 3600
[push.quiet_hours]
enabled = false
[push.triggers.session_nudge]
holdout = 0
"""
ITEMS = [
    {
        "item_id": f"{c[0].lower()}{n}",
        "title": f"{c} {n}",
        "category": ["Shop", c],
        "price": 10.0 + n,
        "stock": 5,
    }
    for c in ("Shoes", "Tents", "Coffee")
    for n in range(6)
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shopcast.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")


def trial(post_to: str, stream_on: str, user: str, cat: str) -> float:
    lines: queue.Queue[tuple[float, str]] = queue.Queue()
    ready = threading.Event()

    def read() -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(30, read=60)) as http,
            http.stream("GET", f"{stream_on}/v1/users/{user}/stream") as response,
        ):
            for line in response.iter_lines():
                if line == ": connected":
                    ready.set()
                lines.put((time.perf_counter(), line))
                if line.startswith("data: "):
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not ready.wait(30):
        raise SystemExit("the stream did not open")
    with httpx.Client(timeout=30) as http:
        for k in (0, 1):
            http.post(
                f"{post_to}/v1/events",
                json={"type": "view", "user_id": user, "item_id": f"{cat}{k}"},
            )
        sent = time.perf_counter()
        r = http.post(
            f"{post_to}/v1/events", json={"type": "view", "user_id": user, "item_id": f"{cat}2"}
        )
        assert r.status_code == 202, r.text
    while True:
        at, line = lines.get(timeout=30)
        if line.startswith("data: "):
            reader.join(timeout=5)
            return 1000 * (at - sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    import redis

    prefix = f"benchfanout:{uuid.uuid4().hex[:10]}:"
    client = redis.Redis.from_url(args.redis)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "shopcast.toml").write_text(CONFIG)
        env = {
            **os.environ,
            "SHOPCAST_CONFIG": str(work / "shopcast.toml"),
            "SHOPCAST_DATABASE_URL": f"sqlite:///{work / 'shop.db'}",
            "SHOPCAST_MODEL_DIR": str(work / "models"),
            "SHOPCAST_STATE__URL": f"{args.redis}?prefix={prefix}",
            "SHOPCAST_AUTH__ENABLED": "false",
            "SHOPCAST_ENVIRONMENT": "test",
            "OPENBLAS_NUM_THREADS": "1",
        }
        a, url_a = start(env, work / "a.log")
        b, url_b = start(env, work / "b.log")
        try:
            with httpx.Client(timeout=30) as http:
                http.put(f"{url_a}/v1/items", json=ITEMS).raise_for_status()
            channel = f"{prefix}push:live"
            while dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) < 2:
                time.sleep(0.05)
            cats = ("s", "t", "c")
            cross, same = [], []
            for n in range(args.trials):
                cross.append(trial(url_a, url_b, f"x{n}", cats[n % 3]))
                same.append(trial(url_a, url_a, f"s{n}", cats[n % 3]))
        finally:
            for proc in (a, b):
                proc.send_signal(signal.SIGTERM)
            for proc in (a, b):
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "median_ms": round(statistics.median(values), 1),
            "p95_ms": round(pct(values, 0.95), 1),
            "max_ms": round(max(values), 1),
        }

    result = {
        "what": "event posted to API process A -> push on an SSE stream (session nudge)",
        "trials": args.trials,
        "stream_on_other_process": summary(cross),
        "stream_on_same_process": summary(same),
        "data": "SYNTHETIC catalog (18 items), no trained model",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "command": f"nice -n 10 .venv/bin/python bench/bench_push_fanout.py --trials {args.trials}",
    }
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
