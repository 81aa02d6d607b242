"""P4 — scale, on the scale-out setup, at a reduced and stated scale.

One command::

    nice -n 10 python bench/bench_p4_scale.py [--users 100000] [--items 20000] [--store postgres]

BENCHMARKS.md's P4 is a SIMULATED shop of 1M users, 100k items and 10M events; this
machine (2 cores shared with other work, 24 GB) cannot build that in a benchmark's time,
so the scale is a parameter and the JSON records the scale actually reached. Steps:
the project's simulator (``simulate_shop``, SYNTHETIC data) → import into SQLite (bulk) →
``train_bundle`` (popularity, co-visitation; timed) → optionally copied into PostgreSQL
(COPY) → ``shopcast serve --workers 2`` + one ``shopcast worker`` on Redis, and the
embedded single process for comparison → per arm: resident memory of every API process
after start and after the load, and an open-loop 80/20 recommendation/event load at
``--rate`` (``bench/_loadgen.py``). Writes bench/results/p4_scale.json; never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import RESULTS, SHOPCAST, free_port, machine
from bench_scaleout import (
    MIX,
    POSTGRES,
    REDIS,
    copy_to_postgres,
    process,
    run_load,
    wait_up,
)


def rss_mb(root: int) -> dict[str, float]:
    """Resident memory (MB) of ``root`` and its descendants, by pid."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
    keep, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in keep:
                keep.add(child)
                frontier.append(child)
    out = {}
    for pid in sorted(keep):
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[str(pid)] = round(int(line.split()[1]) / 1024, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=4, help="sessions per user")
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "p4_scale.json")
    args = parser.parse_args()
    import redis

    from shopcast.config import Settings
    from shopcast.ingest.importer import import_events, import_items, import_users
    from shopcast.simulate import simulate_shop
    from shopcast.storage import open_store
    from shopcast.training.bundle import save_bundle, train_bundle

    info = machine()
    run = uuid.uuid4().hex[:8]
    results: dict[str, Any] = {"machine": info, "target": "1M users, 100k items, 10M events"}
    with tempfile.TemporaryDirectory(prefix="shopcast-p4-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        shop = simulate_shop(
            n_users=args.users, n_items=args.items, sessions_per_user=args.sessions, seed=4
        )
        scale = {"users": args.users, "items": args.items, "events": shop.events.height}
        results["scale_reached"] = scale
        results["simulate_s"] = round(time.perf_counter() - t0, 1)
        print(f"SIMULATED shop {scale} in {results['simulate_s']} s", flush=True)
        sqlite_url = f"sqlite:///{work / 'shopcast.db'}"
        store = open_store(sqlite_url)
        t0 = time.perf_counter()
        import_items(store, shop.items)
        import_users(store, shop.users)
        import_events(store, shop.events)
        results["import_s"] = round(time.perf_counter() - t0, 1)
        print(f"imported in {results['import_s']} s", flush=True)
        del shop
        settings = Settings(database_url=sqlite_url, model_dir=work / "models")
        t0 = time.perf_counter()
        bundle = train_bundle(store, settings.recommend)
        results["train_s"] = round(time.perf_counter() - t0, 1)
        save_bundle(bundle, settings.model_dir)
        store.close()
        print(f"trained in {results['train_s']} s", flush=True)
        store = open_store(sqlite_url)
        ev = store.events.frame()
        customers = ev["user_id"].drop_nulls().unique().head(20_000).to_list()
        items = ev["item_id"].drop_nulls().unique().head(5_000).to_list()
        del ev
        store.close()
        base = {"customers": customers, "items": items, "warmup_s": 5.0}
        env = {
            **os.environ,
            "OPENBLAS_NUM_THREADS": "1",
            "SHOPCAST_AUTH__ENABLED": "false",
            "SHOPCAST_MODEL_DIR": str(settings.model_dir),
        }
        load = {
            **base,
            "mode": "open",
            "mix": MIX,
            "rate": args.rate,
            "seconds": args.seconds,
            "connections": 64,
        }

        def measure(label: str, cmd: list[str], arm_env: dict[str, str], extra: list[Any]) -> None:
            port = free_port()
            log = work / f"{label}.log"
            t0 = time.perf_counter()
            with process([*cmd, "--port", str(port)], arm_env, log) as server:
                wait_up(f"http://127.0.0.1:{port}", server, log)
                started = time.perf_counter() - t0
                time.sleep(5)
                rss_start = rss_mb(server.pid)
                pids = [server.pid, *[p.pid for p in extra]]
                r = run_load(port, {}, {**load, "run_id": f"p4-{run}-{label}"}, pids)
                results[label] = {
                    "start_s": round(started, 1),
                    "rss_mb_after_start": rss_start,
                    "rss_mb_after_load": rss_mb(server.pid),
                    "load": r,
                }
            print(f"{label}: {json.dumps(results[label]['rss_mb_after_load'])} MB", flush=True)

        print("embedded ...", flush=True)
        # the push outbox in its own SQLite file: on the store's file its writes can lock
        # out the event log's under load (see the scale-out benchmark)
        push_apart = {"SHOPCAST_PUSH__OUTBOX_URL": f"sqlite:///{work / 'push.db'}"}
        embedded_env = {**env, "SHOPCAST_DATABASE_URL": sqlite_url, **push_apart}
        measure("embedded_push_apart", [*SHOPCAST, "serve"], embedded_env, [])
        prefix = f"p4:{run}:"
        schema = f"p4_{run}"
        url = sqlite_url
        try:
            if args.store == "postgres":
                import psycopg

                with psycopg.connect(POSTGRES, autocommit=True) as conn:
                    conn.execute(f'CREATE SCHEMA "{schema}"')
                url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
                results["postgres_load_s"] = round(
                    copy_to_postgres(work, url, settings.model_dir), 1
                )
            scale_env = {**env, "SHOPCAST_DATABASE_URL": url}
            scale_env["SHOPCAST_STATE__URL"] = f"{REDIS}?prefix={prefix}"
            print("scale-out ...", flush=True)
            with process([*SHOPCAST, "worker"], scale_env, work / "worker.log") as worker:
                measure(
                    f"scaleout_{args.store}_redis",
                    [*SHOPCAST, "serve", "--workers", "2"],
                    scale_env,
                    [worker],
                )
        finally:
            r = redis.Redis.from_url(REDIS)
            keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                r.delete(*keys)
            if args.store == "postgres":
                import psycopg

                with psycopg.connect(POSTGRES, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    with suppress(OSError):
        info["loadavg_1m_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1)[:4000])


if __name__ == "__main__":
    main()
