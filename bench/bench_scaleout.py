"""Scale-out: 2 API processes + 1 worker on Redis (and PostgreSQL) vs the embedded default.

One command::

    nice -n 10 python bench/bench_scaleout.py [--data-dir DIR] [--store postgres|sqlite]

Over the real UCI Online Retail store with a trained model (as P1; ``--data-dir`` reuses
a ``shopcast demo --once`` directory), in the same run and one after the other:

1. **embedded**: ``shopcast serve`` (one process, SQLite, in-process live state);
2. **scale-out**: ``shopcast serve --workers 2`` (two uvicorn worker processes on one
   port) + one ``shopcast worker``, live state and event stream in Redis (a unique key
   prefix on the local server), the event log/catalog/profiles/registry in PostgreSQL
   (``--store postgres``, a fresh schema with the same data, loaded with COPY) or in the
   same SQLite file (``--store sqlite``);
3. **freshness across processes** (P2 target ≤ 50 ms): two separate ``shopcast serve``
   processes on the scale-out setup; an event posted to one, then the *other* asked for
   recommendations until the answer reflects it (see ``freshness``), and the same with
   both on one process as the baseline.

Each arm gets the same load (``bench/_loadgen.py``): a closed loop (``--connections``
clients, 80 % recommendations / 20 % event posts) for the most it sustains, then an
open loop at ``--rate`` req/s for latency. CPU is summed over each arm's process tree
(Redis and PostgreSQL servers excluded: they are shared with other work on this
machine). The machine has 2 cores shared with other processes: the scale-out arm cannot
gain from more cores here, it shows the cost of the shared state and that it works.
Writes bench/results/scaleout.json. Figures, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import (
    RESULTS,
    SHOPCAST,
    api_key,
    db_url,
    free_port,
    machine,
    percentiles,
    prepare_data,
    shop_ids,
)

LOADGEN = Path(__file__).resolve().parent / "_loadgen.py"
MIX = {"rec": 0.8, "event": 0.2}
REDIS = os.environ.get("SHOPCAST_BENCH_REDIS", "redis://127.0.0.1:6379/0")
POSTGRES = os.environ.get("SHOPCAST_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every descendant still running."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with suppress(OSError, IndexError, ValueError):
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            parent[int(d.name)] = int(fields[1])
            cpu[int(d.name)] = (int(fields[11]) + int(fields[12])) / tick
    keep, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in keep:
                keep.add(child)
                frontier.append(child)
    return sum(cpu.get(p, 0.0) for p in keep)


@contextmanager
def process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_up(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited: {log.read_text()[-2000:]}")
        with suppress(httpx.TransportError):
            if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise SystemExit(f"{base} did not come up")


def run_load(
    port: int, headers: dict[str, str], spec: dict[str, Any], pids: list[int]
) -> dict[str, Any]:
    spec = {"port": port, "headers": headers, **spec}
    before = sum(tree_cpu(p) for p in pids)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(LOADGEN)], input=json.dumps(spec).encode(), capture_output=True
    )
    if done.returncode:
        raise SystemExit(done.stderr.decode()[-2000:])
    wall = time.perf_counter() - started
    result: dict[str, Any] = json.loads(done.stdout)
    served = sum(result["status"].values()) + result["errors"]
    cpu = sum(tree_cpu(p) for p in pids) - before
    lat: dict[str, list[float]] = result.pop("latencies_ms")
    lost: dict[str, int] = result["unanswered"]
    result["all"] = percentiles([x for v in lat.values() for x in v], sum(lost.values()))
    result["by_kind"] = {
        k: percentiles(lat.get(k, []), lost.get(k, 0)) for k in sorted({*lat, *lost})
    }
    result["server_cpu_s"] = round(cpu, 2)
    result["server_cpu_ms_per_request"] = round(1000 * cpu / max(served, 1), 3)
    result["server_cpu_share"] = round(cpu / wall, 2)
    return result


def loads(
    port: int,
    headers: dict[str, str],
    pids: list[int],
    base: dict[str, Any],
    args: argparse.Namespace,
    tag: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    print(f"  closed loop, {args.connections} connections ...", flush=True)
    out["closed_mix"] = run_load(
        port,
        headers,
        {
            **base,
            "mode": "closed",
            "mix": MIX,
            "seconds": args.seconds,
            "connections": args.connections,
            "run_id": f"{tag}-c",
        },
        pids,
    )
    time.sleep(3)
    print(f"  open loop, {args.rate:g} req/s ...", flush=True)
    out[f"open_mix_{args.rate:g}"] = run_load(
        port,
        headers,
        {
            **base,
            "mode": "open",
            "mix": MIX,
            "rate": args.rate,
            "seconds": args.seconds,
            "connections": 128,
            "run_id": f"{tag}-o",
        },
        pids,
    )
    return out


def copy_to_postgres(data: Path, url: str, model_dir: Path) -> float:
    """The SQLite store's catalog, users and events into PostgreSQL (COPY); CURRENT in its
    registry. Seconds taken."""
    from shopcast.config import Settings
    from shopcast.storage import EVENT_COLUMNS, open_store
    from shopcast.training.registry import ModelRegistry, open_registry

    t0 = time.perf_counter()
    src, dst = open_store(db_url(data)), open_store(url)
    try:
        dst.items.upsert(list(src.items.scan()))
        dst.users.upsert(list(src.users.scan()))
        dst.events.append_frame(src.events.frame().select(EVENT_COLUMNS))
    finally:
        src.close()
        dst.close()
    version = ModelRegistry(model_dir).current()
    assert version is not None
    open_registry(Settings(database_url=url, model_dir=model_dir)).promote(version)
    return time.perf_counter() - t0


def freshness(
    a: str, b: str, headers: dict[str, str], items: list[str], trials: int, run: str
) -> dict[str, Any]:
    """P2 across processes: a new shopper views an item A; the clock starts at the 202 and
    the answer is asked for until it *reflects the event*: A's strongest co-visited
    neighbour is in it (``bench_p2_freshness.py``'s test), or an item is explained by A
    ("because you viewed <A>", "often viewed with <A>"), or A itself is shown as recently
    viewed. A cold-start answer has none of these. ``cross``: the event is posted to process
    ``a``, the answers asked from ``b``; ``same``: both on ``b`` (the baseline)."""
    import random

    rng = random.Random(0)
    anchors = items[50:3000]  # not the top sellers (the cold-start list), as P2
    client = httpx.Client(headers=headers, timeout=10)

    def answer(base: str, user: str) -> list[dict[str, Any]]:
        r = client.get(f"{base}/v1/users/{user}/recommendations", params={"k": 10})
        return list(r.json()["items"])

    def neighbour(item: str) -> str | None:
        r = client.get(f"{b}/v1/items/{item}/similar", params={"k": 1})
        found = [i for i in r.json().get("items", []) if i["source"] == "covisit"]
        return str(found[0]["item_id"]) if r.status_code == 200 and found else None

    def reflects(rows: list[dict[str, Any]], anchor: str, title: str, nb: str) -> bool:
        return any(
            r["item_id"] in (anchor, nb) or (title and title in (r.get("reason") or ""))
            for r in rows
        )

    cold = [r["item_id"] for r in answer(b, f"cold-{run}")]
    out: dict[str, Any] = {"target_ms": 50}
    for mode, post_to in (("cross", a), ("same", b)):
        delays: list[float] = []
        first = missed = 0
        for n in range(trials):
            user = f"fresh-{run}-{mode}-{n}"
            before = [r["item_id"] for r in answer(b, user)] if n % 2 else cold
            for _ in range(200):
                anchor = rng.choice(anchors)
                nb = neighbour(anchor)
                if nb is not None and nb not in before and anchor not in before:
                    break
            item = client.get(f"{b}/v1/items/{anchor}")
            title = str(item.json().get("title") or "") if item.status_code == 200 else ""
            ev = {"event_id": f"{run}-{mode}-{n}", "type": "view", "user_id": user}
            ev["item_id"] = anchor
            assert client.post(f"{post_to}/v1/events", json=ev).status_code == 202
            t0 = time.perf_counter()
            polls = 0
            while True:
                polls += 1
                if reflects(answer(b, user), anchor, title, nb or ""):
                    delays.append((time.perf_counter() - t0) * 1000)
                    first += polls == 1
                    break
                if time.perf_counter() - t0 > 2.0:
                    missed += 1
                    break
        out[mode] = {
            "trials": trials,
            "next_request_reflects": first,
            "not_reflected_within_2s": missed,
            "delay_202_to_reflecting_response": percentiles(delays),
        }
    client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="an existing demo dir")
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--out", type=Path, default=RESULTS / "scaleout.json")
    parser.add_argument("--logs", type=Path, default=None, help="keep the servers' logs here")
    args = parser.parse_args()
    import redis

    info = machine()
    run = uuid.uuid4().hex[:8]
    prefix = f"bench:{run}:"
    schema = f"bench_{run}"
    results: dict[str, Any] = {
        "machine": info,
        "settings": {k: v if isinstance(v, int | float) else str(v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="shopcast-scale-") as tmp:
        work = Path(tmp)
        data = prepare_data(work, args.data_dir)
        customers, items = shop_ids(data)
        print(
            f"store: {len(customers)} customers, {len(items)} items (UCI Online Retail, real)",
            flush=True,
        )
        base = {"customers": customers, "items": items[:2000], "warmup_s": args.warmup}
        env = {
            **os.environ,
            "OPENBLAS_NUM_THREADS": "1",
            "SHOPCAST_MODEL_DIR": str(data / "models"),
        }
        headers = api_key(data, env)

        # 1. embedded default -----------------------------------------------------------
        # "embedded": exactly the default. "embedded_push_apart": the push outbox in its own
        # SQLite file (push.outbox_url), since on the store's file its writes can lock out
        # the event log's (500 "database is locked" seen on this commit under load).
        for arm, extra in (
            ("embedded", {}),
            ("embedded_push_apart", {"SHOPCAST_PUSH__OUTBOX_URL": f"sqlite:///{work / 'push.db'}"}),
        ):
            print(f"{arm}: 1 process, SQLite, in-process live state", flush=True)
            port = free_port()
            embedded_env = {**env, "SHOPCAST_DATABASE_URL": db_url(data), **extra}
            log = work / f"{arm}.log"
            with process([*SHOPCAST, "serve", "--port", str(port)], embedded_env, log) as proc:
                wait_up(f"http://127.0.0.1:{port}", proc, log)
                results[arm] = loads(port, headers, [proc.pid], base, args, f"{arm}{run}")

        # 2. scale-out --------------------------------------------------------------------
        store_url = db_url(data)
        model_dir = data / "models"
        if args.store == "postgres":
            import psycopg

            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            store_url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
            model_dir = work / "pg-models"
            shutil.copytree(data / "models", model_dir)
            took = copy_to_postgres(data, store_url, model_dir)
            print(f"copied the store into PostgreSQL schema {schema} in {took:.0f} s", flush=True)
            results["postgres_load_s"] = round(took, 1)
        scale_env = {
            **env,
            "SHOPCAST_DATABASE_URL": store_url,
            "SHOPCAST_MODEL_DIR": str(model_dir),
            "SHOPCAST_STATE__URL": f"{REDIS}?prefix={prefix}",
        }
        label = f"scaleout_{args.store}_redis"
        print(f"{label}: serve --workers 2 + 1 worker", flush=True)
        port = free_port()
        try:
            slog, wlog = work / "scale.log", work / "worker.log"
            with (
                process(
                    [*SHOPCAST, "serve", "--workers", "2", "--port", str(port)], scale_env, slog
                ) as server,
                process([*SHOPCAST, "worker", "--name", "bench"], scale_env, wlog) as worker,
            ):
                wait_up(f"http://127.0.0.1:{port}", server, slog)
                time.sleep(5)  # both uvicorn workers loaded
                results[label] = loads(
                    port, headers, [server.pid, worker.pid], base, args, f"s{run}"
                )
                r = redis.Redis.from_url(REDIS, decode_responses=True)
                deadline = time.monotonic() + 120
                backlog: dict[str, Any] = {}
                while time.monotonic() < deadline:
                    groups = r.xinfo_groups(f"{prefix}events")
                    backlog = {
                        g["name"]: {"pending": g["pending"], "lag": g.get("lag")} for g in groups
                    }
                    if all(v["pending"] == 0 and not v["lag"] for v in backlog.values()):
                        break
                    time.sleep(0.5)
                results[label]["stream"] = {
                    "length": r.xlen(f"{prefix}events"),
                    "groups_after_drain": backlog,
                    "worker_applied": int(r.get(f"{prefix}c:worker:bench:applied") or 0),
                }
            # 3. freshness across two processes ---------------------------------------------
            print("freshness across processes ...", flush=True)
            pa, pb = free_port(), free_port()
            la, lb = work / "a.log", work / "b.log"
            with (
                process([*SHOPCAST, "serve", "--port", str(pa)], scale_env, la) as a,
                process([*SHOPCAST, "serve", "--port", str(pb)], scale_env, lb) as b,
            ):
                wait_up(f"http://127.0.0.1:{pa}", a, la)
                wait_up(f"http://127.0.0.1:{pb}", b, lb)
                results["freshness_across_processes"] = freshness(
                    f"http://127.0.0.1:{pa}",
                    f"http://127.0.0.1:{pb}",
                    headers,
                    items,
                    args.trials,
                    run,
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
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log_file in work.glob("*.log"):
                shutil.copy2(log_file, args.logs / log_file.name)
    with suppress(OSError):
        info["loadavg_1m_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"written {args.out}")


def print_table(results: dict[str, Any]) -> None:
    head = ("arm", "phase", "req/s", "p50 ms", "p99 ms", "rec p99", "CPU ms/req")
    print("\n" + " ".join(f"{h:>10}" for h in head))
    for arm, phases in results.items():
        if not isinstance(phases, dict) or "closed_mix" not in phases:
            continue
        for phase, r in phases.items():
            if not isinstance(r, dict) or "all" not in r:
                continue
            rec = r["by_kind"].get("rec", {})
            row = (
                arm,
                phase,
                r["achieved_rps"],
                r["all"].get("p50_ms"),
                r["all"].get("p99_ms"),
                rec.get("p99_ms"),
                r["server_cpu_ms_per_request"],
            )
            print(" ".join(f"{x!s:>10}" for x in row))
    fresh = results.get("freshness_across_processes")
    if fresh:
        print(f"\nfreshness across processes: {fresh}")


if __name__ == "__main__":
    main()
