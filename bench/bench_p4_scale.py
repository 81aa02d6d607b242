"""P4 — scale, on the scale-out setup (PostgreSQL + Redis, 2 API processes + 1 worker).

One command per scale (run the small one in the same session, for the comparison)::

    nice -n 5 python bench/bench_p4_scale.py --users 1000000 --items 100000 \\
        --events 10000000 --out bench/results/p4_scale_full.json
    nice -n 5 python bench/bench_p4_scale.py --users 60000 --items 15000 \\
        --events 1390000 --out bench/results/p4_scale_small.json

BENCHMARKS.md's P4: a SIMULATED shop (SYNTHETIC data, ``simulate_event_chunks``, the
project's shopper model vectorized) of ``--users`` / ``--items`` / about ``--events``.
Steps, each timed:

1. generate and ingest into a PostgreSQL schema of its own (items and users upserted,
   users' documents and the events with ``COPY``), chunk by chunk: the log is never
   whole in this process;
2. ``shopcast train`` in a child process (popularity, co-visitation, bought together,
   the learned ranker when it beats the blend): wall time and the child's peak RSS;
3. ``shopcast worker`` + ``shopcast serve --workers 2`` on PostgreSQL and a Redis prefix of
   its own (``profiles.resident_users`` = ``--resident-users``): start time, the resident
   memory of every process after start and after the load, and an open-loop 80/20
   recommendation/event load at each ``--rate`` in turn for ``--seconds``
   (``bench/_loadgen.py``, as P1), with the servers' CPU per request.

``--keep`` leaves the schema and the model directory; ``--schema`` reuses such a schema
(no ingest), ``--models`` its trained models (no training).

The schema, the Redis keys and the temporary directory (models, logs; under ``$TMPDIR``)
are removed at the end. Writes ``--out``; never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import RESULTS, SHOPCAST, free_port, machine
from bench_scaleout import MIX, POSTGRES, REDIS, process, run_load, wait_up


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


def ingest(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The simulated shop into the store at ``url``; counts and seconds."""
    import polars as pl

    from shopcast.ingest.importer import import_events
    from shopcast.simulate import simulate_event_chunks, simulated_items
    from shopcast.storage import open_store
    from shopcast.storage._postgres import PostgresStore

    store = open_store(url)
    assert isinstance(store, PostgresStore)
    t0 = time.perf_counter()
    try:
        items = simulated_items(args.items, seed=args.seed)
        for i in range(0, len(items), 20_000):
            store.items.upsert(items[i : i + 20_000])
        del items
        rng = random.Random(args.seed)
        genders, regions = ("f", "m", "x"), ("UK", "France", "Germany", "Spain")
        sql = "COPY users (user_id, doc) FROM STDIN"
        with store.db.transaction() as conn, conn.cursor() as cur, cur.copy(sql) as copy:
            for u in range(args.users):
                uid = f"sim-user-{u:05d}"
                doc = (
                    f'{{"user_id":"{uid}","age":{rng.randint(18, 74)},'
                    f'"gender":"{rng.choice(genders)}","region":"{rng.choice(regions)}",'
                    '"attributes":{"synthetic":true}}'
                )
                copy.write_row((uid, doc))
        users_s = time.perf_counter() - t0
        print(f"  {args.users:,} users, {args.items:,} items in {users_s:.0f} s", flush=True)
        events = 0
        gen_s = 0.0
        chunks = simulate_event_chunks(
            n_users=args.users, n_items=args.items, n_events=args.events, seed=args.seed
        )
        while True:
            g0 = time.perf_counter()
            chunk = next(chunks, None)
            gen_s += time.perf_counter() - g0
            if chunk is None:
                break
            summary = import_events(store, chunk, chunk_rows=200_000)
            events += summary.accepted
            rate = events / (time.perf_counter() - t0)
            print(f"  {events:,} events ({rate:,.0f}/s overall)", flush=True)
        assert isinstance(chunk, pl.DataFrame | None)
    finally:
        store.close()
    return {
        "events": events,
        "users_items_s": round(users_s, 1),
        "generate_s": round(gen_s, 1),
        "total_s": round(time.perf_counter() - t0, 1),
    }


def train(env: dict[str, str], log: Path, *flags: str) -> dict[str, Any]:
    """``shopcast train`` in a child: wall seconds and the child's peak RSS."""
    t0 = time.perf_counter()
    with log.open("wb") as out:
        child = subprocess.Popen([*SHOPCAST, "train", *flags], env=env, stdout=out, stderr=out)
        _, status, usage = os.wait4(child.pid, 0)
    if status:
        raise SystemExit(f"training failed: {log.read_text()[-3000:]}")
    return {
        "train_s": round(time.perf_counter() - t0, 1),
        "train_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "train_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument(
        "--rate", type=float, nargs="+", default=[10.0, 50.0], help="open-loop req/s, in turn"
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "p4_scale.json")
    parser.add_argument(
        "--keep", action="store_true", help="keep the schema and models (prints where)"
    )
    parser.add_argument(
        "--resident-users",
        type=int,
        default=50_000,
        help="profiles.resident_users of the API processes (0: every user, batch-built)",
    )
    parser.add_argument("--no-serve", action="store_true", help="stop after training")
    parser.add_argument("--no-train", action="store_true", help="stop after the ingest")
    parser.add_argument(
        "--no-ranker", action="store_true", help="shopcast train --no-ranker (no learned ranker)"
    )
    parser.add_argument(
        "--models", type=Path, help="serve this model dir (trained by a --keep run on --schema)"
    )
    parser.add_argument(
        "--schema", help="reuse this schema (ingested by an earlier --keep run; dropped after)"
    )
    args = parser.parse_args()
    import psycopg
    import redis

    info = machine()
    run = uuid.uuid4().hex[:8]
    results: dict[str, Any] = {
        "machine": info,
        "target": "1M users, 100k items, 10M events; serving RSS <= 2 GB per process",
        "data": "SIMULATED (simulate_event_chunks, SYNTHETIC)",
        "scale": {"users": args.users, "items": args.items, "events_asked": args.events},
    }
    prefix, schema = f"p4:{run}:", args.schema or f"p4_{run}"
    url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    work = Path(tempfile.mkdtemp(prefix="shopcast-p4-"))
    try:
        print(f"schema {schema}, Redis prefix {prefix}, files in {work}", flush=True)
        if args.schema is None:
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            results["ingest"] = ingest(url, args)
            if args.no_train:
                return
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT COUNT(*) FROM events").fetchone()
            results["scale"]["events"] = None if row is None else int(row[0])
        env = {
            **os.environ,
            "OPENBLAS_NUM_THREADS": "1",
            "SHOPCAST_AUTH__ENABLED": "false",
            "SHOPCAST_MODEL_DIR": str(args.models or work / "models"),
            "SHOPCAST_DATABASE_URL": url,
            "SHOPCAST_STATE__URL": f"{REDIS}?prefix={prefix}",
        }
        if args.resident_users:
            env["SHOPCAST_PROFILES__RESIDENT_USERS"] = str(args.resident_users)
        results["resident_users"] = args.resident_users or None
        if args.models is None:
            print("training ...", flush=True)
            flags = ["--no-ranker"] if args.no_ranker else []
            results["training"] = train(env, work / "train.log", *flags)
            results["training"]["flags"] = flags
            print(f"  {results['training']}", flush=True)
        if args.no_serve:
            return
        rng = random.Random(1)
        customers = [f"sim-user-{u:05d}" for u in rng.sample(range(args.users), 20_000)]
        items = [f"sim-{i:05d}" for i in rng.sample(range(args.items), 5_000)]
        load = {
            "customers": customers,
            "items": items,
            "warmup_s": 5.0,
            "mode": "open",
            "mix": MIX,
            "rate": args.rate[0],
            "seconds": args.seconds,
            "connections": 64,
            "run_id": f"p4-{run}",
        }
        print("scale-out: worker + serve --workers 2 ...", flush=True)
        port = free_port()
        with process([*SHOPCAST, "worker"], env, work / "worker.log") as worker:
            t0 = time.perf_counter()
            cmd = [*SHOPCAST, "serve", "--workers", "2", "--port", str(port)]
            with process(cmd, env, work / "serve.log") as server:
                wait_up(f"http://127.0.0.1:{port}", server, work / "serve.log")
                started = time.perf_counter() - t0
                time.sleep(5)
                arm: dict[str, Any] = {
                    "start_s": round(started, 1),
                    "rss_mb_after_start": rss_mb(server.pid),
                    "worker_rss_mb_after_start": rss_mb(worker.pid),
                }
                print(f"  up in {started:.0f} s: {arm['rss_mb_after_start']} MB", flush=True)
                arm["load"] = {}
                for rate in args.rate:
                    spec = {**load, "rate": rate, "run_id": f"p4-{run}-{rate:g}"}
                    r = run_load(port, {}, spec, [server.pid, worker.pid])
                    arm["load"][f"{rate:g}"] = r
                    print(f"  {rate:g} req/s: {r['all']} {r['achieved_rps']} req/s", flush=True)
                    with suppress(OSError):
                        r["loadavg_1m"] = os.getloadavg()[0]
                arm["rss_mb_after_load"] = rss_mb(server.pid)
                arm["worker_rss_mb_after_load"] = rss_mb(worker.pid)
                results["scaleout_postgres_redis"] = arm
        print(f"  after load: {arm['rss_mb_after_load']} MB", flush=True)
    finally:
        if args.keep:
            print(f"kept: {url} {work}", flush=True)
        else:
            r = redis.Redis.from_url(REDIS)
            keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
            for i in range(0, len(keys), 1000):
                r.delete(*keys[i : i + 1000])
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            subprocess.run(["rm", "-rf", str(work)], check=False)
    with suppress(OSError):
        info["loadavg_1m_end"] = os.getloadavg()[0]
    results["bench_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1)[:4000])


if __name__ == "__main__":
    main()
