"""Push figures: SSE latency of a push (event posted -> push received by a subscriber)
on a real uvicorn server over SQLite, the outbox's enqueue / claim+ack throughput on
SQLite (WAL, synchronous=FULL), and the cost of the triggers per event.

The shop here is SYNTHETIC (18 items, users with consent); the SSE trials each use a
fresh user who views three items of one category (the session nudge).

Run: ``nice -n 10 .venv/bin/python bench/bench_push.py [--trials 50]``; prints the
figures and writes ``bench/results/push.json``. Replay figures on the real Taobao
sample come from ``shopcast push simulate --data $SHOPCAST_DATA``.
"""

from __future__ import annotations

import argparse
import json
import platform
import queue
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shopcast.api import create_app
from shopcast.config import Settings
from shopcast.push.messages import PushItem, PushMessage, delivery_for
from shopcast.push.outbox import open_outbox

RESULTS = Path(__file__).parent / "results" / "push.json"
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
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def sse_latency(trials: int, tmp: Path) -> dict[str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{tmp / 'shop.db'}",
        model_dir=tmp / "m",
        auth={"enabled": False},
        push={"quiet_hours": {"enabled": False}, "triggers": {"session_nudge": {"holdout": 0}}},
    )
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base, timeout=30)
    http.put("/v1/items", json=ITEMS)
    users = [{"user_id": f"b{i}", "consent": {"push": True}} for i in range(trials)]
    http.put("/v1/users", json=users)
    out = []
    for i in range(trials):
        user = f"b{i}"
        got: queue.Queue[float] = queue.Queue()
        ready = threading.Event()

        def read(
            user: str = user, got: queue.Queue[float] = got, ready: threading.Event = ready
        ) -> None:
            with (
                httpx.Client(base_url=base, timeout=30) as c,
                c.stream("GET", f"/v1/users/{user}/stream") as r,
            ):
                for line in r.iter_lines():
                    if line == ": connected":
                        ready.set()
                    if line.startswith("event: push"):
                        got.put(time.perf_counter())
                        return

        threading.Thread(target=read, daemon=True).start()
        ready.wait(30)
        cat = ("t", "c", "s")[i % 3]
        for k in range(2):
            http.post("/v1/events", json={"type": "view", "user_id": user, "item_id": f"{cat}{k}"})
        start = time.perf_counter()
        http.post("/v1/events", json={"type": "view", "user_id": user, "item_id": f"{cat}2"})
        out.append(got.get(timeout=30) - start)
    http.close()
    srv.should_exit = srv.force_exit = True
    ms = [1000 * x for x in out]
    return {
        "trials": trials,
        "p50_ms": statistics.median(ms),
        "p95_ms": pct(ms, 0.95),
        "max_ms": max(ms),
    }


def outbox_throughput(tmp: Path, n: int = 2000) -> dict[str, float]:
    box = open_outbox(f"sqlite:///{tmp / 'outbox.db'}")
    msgs = [
        PushMessage(
            f"m{i}",
            f"d{i}",
            f"u{i % 100}",
            "cart_abandonment",
            "live",
            "t",
            "b",
            (PushItem("i1"),),
            1.0,
        )
        for i in range(n)
    ]
    start = time.perf_counter()
    for m in msgs:  # one transaction (one fsync) per decision, as the engine commits
        box.enqueue([m], [delivery_for(m)])
    enqueue = time.perf_counter() - start
    start = time.perf_counter()
    done = 0
    while claims := box.claim(10.0, limit=100):
        for c in claims:
            box.ack(c.delivery.delivery_id, now=10.0)
            done += 1
    drain = time.perf_counter() - start
    box.close()
    return {"messages": n, "enqueue_per_s": n / enqueue, "claim_ack_per_s": done / drain}


def trigger_cost(tmp: Path) -> dict[str, float]:
    """``PushEngine.observe`` over one SQLite file (one transaction per call)."""
    from shopcast.domain import Event, Item, User
    from shopcast.push.engine import PushEngine, open_storage
    from shopcast.push.items import CatalogItems

    url = f"sqlite:///{tmp / 'triggers.db'}"
    outbox, state, journal = open_storage(url, url)
    items = [Item(**i) for i in ITEMS]
    users = {f"u{i}": User(user_id=f"u{i}", consent={"push": True}) for i in range(100)}
    settings = Settings(environment="test", database_url="memory://")
    engine = PushEngine(
        settings,
        outbox=outbox,
        state=state,
        journal=journal,
        items=CatalogItems(items),
        users=users.get,
    )
    ids = [i.item_id for i in items]
    views = [
        Event(type="view", user_id=f"u{i % 100}", item_id=ids[i % len(ids)], timestamp=1e9 + i)
        for i in range(1000)
    ]
    start = time.perf_counter()
    engine.observe(views)
    batch = time.perf_counter() - start
    carts = [
        Event(
            type="add_to_cart", user_id=f"u{i % 100}", item_id=ids[i % len(ids)], timestamp=2e9 + i
        )
        for i in range(100)
    ]
    start = time.perf_counter()
    for e in carts:
        engine.observe([e])
    single = time.perf_counter() - start
    engine.close()
    return {
        "batch_of_1000_views_ms_per_event": 1000 * batch / 1000,
        "single_event_ms": 1000 * single / len(carts),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result = {
            "sse_latency": sse_latency(args.trials, tmp),
            "outbox_sqlite": outbox_throughput(tmp),
            "triggers_sqlite": trigger_cost(tmp),
            "machine": {"python": platform.python_version(), "cpus": "2 shared cores"},
        }
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
