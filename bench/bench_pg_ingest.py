"""Ingest on PostgreSQL (COPY) against SQLite, same data, same run.

Arms, each on a fresh database (SQLite: a file in a temporary directory; PostgreSQL: a
schema of its own on ``--pg``, dropped afterwards):

- ``storage``: SYNTHETIC events (``bench_storage.synthetic_events``): ``append_frame`` of
  N rows into an empty log, N new rows into the non-empty log, the first N again (all
  duplicates), then ``frame()`` of the whole log. On PostgreSQL, also the same N rows
  with ``executemany`` of ``INSERT ... ON CONFLICT DO NOTHING`` (what bulk ingest
  would cost without COPY);
- ``api_batches``: ``append`` of events in batches of 50 (what ``POST /v1/events`` does
  per request), one thread;
- ``import``: the REAL UCI Online Retail file with ``import_dataset`` as
  ``shopcast import dataset online-retail`` does (chunks of 50,000 rows), then again
  (all duplicates). Skipped when the dataset is absent.

The two backends take turns in each run (same machine load). Prints rows/s (median of
``--runs``) and writes ``bench/results/pg_ingest.json``.
Usage: ``python bench/bench_pg_ingest.py [--rows 200000] [--runs 3]
[--pg postgresql://postgres@127.0.0.1:5432/test]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from bench_storage import synthetic_events

from shopcast.config import default_data_path
from shopcast.domain import Event
from shopcast.ingest.datasets import DATASETS
from shopcast.ingest.importer import import_dataset
from shopcast.storage import EVENT_COLUMNS, Store, open_store

RESULTS = Path(__file__).parent / "results" / "pg_ingest.json"
DATASET = "online-retail"
BATCH = 50


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/bench.db"


def pg_url_factory(base: str) -> Callable[[], Any]:
    @contextmanager
    def pg_url() -> Iterator[str]:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in base else "?"
        try:
            yield f"{base}{sep}options=-csearch_path%3D{schema}"
        finally:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    return pg_url


def storage_run(url: str, rows: int, seed: int) -> dict[str, float]:
    first = synthetic_events(rows, 0, seed)
    second = synthetic_events(rows, rows, seed + 1)
    store = open_store(url)
    try:
        t0 = time.perf_counter()
        r1 = store.events.append_frame(first)
        t1 = time.perf_counter()
        r2 = store.events.append_frame(second)
        t2 = time.perf_counter()
        r3 = store.events.append_frame(first)
        t3 = time.perf_counter()
        out = store.events.frame()
        t4 = time.perf_counter()
    finally:
        store.close()
    assert (r1.accepted, r2.accepted, r3.duplicates, out.height) == (rows, rows, rows, 2 * rows)
    return {
        "append_frame_empty_log_rows_per_s": rows / (t1 - t0),
        "append_frame_nonempty_log_rows_per_s": rows / (t2 - t1),
        "append_frame_all_duplicates_rows_per_s": rows / (t3 - t2),
        "frame_read_rows_per_s": out.height / (t4 - t3),
    }


def insert_run(url: str, rows: int, seed: int) -> dict[str, float]:
    """The same first load with executemany INSERT instead of COPY (PostgreSQL only)."""
    from shopcast.storage._postgres import split_url

    frame = synthetic_events(rows, 0, seed)
    open_store(url).close()  # migrations
    conninfo, _ = split_url(url)
    marks = ", ".join(["%s"] * len(EVENT_COLUMNS))
    sql = (
        f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({marks}) "
        "ON CONFLICT (event_id) DO NOTHING"
    )
    with psycopg.connect(conninfo) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cursor:
            cursor.executemany(sql, frame.rows())
        conn.commit()
        seconds = time.perf_counter() - t0
    return {"executemany_insert_empty_log_rows_per_s": rows / seconds}


def api_run(url: str, batches: int) -> dict[str, float]:
    store: Store = open_store(url)
    try:
        t0 = time.perf_counter()
        for b in range(batches):
            events = [
                Event(event_id=f"api-{b}-{j}", type="view", user_id=f"u{j}", item_id=f"i{b % 97}")
                for j in range(BATCH)
            ]
            assert store.events.append(events).accepted == BATCH
        seconds = time.perf_counter() - t0
    finally:
        store.close()
    return {"append_batches_of_50_rows_per_s": batches * BATCH / seconds}


def import_run(url: str, data_path: Path) -> dict[str, float]:
    store = open_store(url)
    try:
        first = import_dataset(store, DATASET, data_path=data_path, chunk_rows=50_000)
        again = import_dataset(store, DATASET, data_path=data_path, chunk_rows=50_000)
    finally:
        store.close()
    assert again.accepted == 0
    return {
        "import_rows_per_s": first.rows_per_s,
        "import_store_seconds": first.timings.get("store", 0.0),
        "reimport_rows_per_s": again.rows_per_s,
        "rows_read": float(first.rows_read),
    }


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--data", type=Path, default=default_data_path())
    args = parser.parse_args()
    backends = {"sqlite": sqlite_url, "postgresql": pg_url_factory(args.pg)}
    has_data = (args.data / DATASETS[DATASET].folder).is_dir()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in backends}
    for seed in range(args.runs):  # the backends take turns: both see the same load
        for name, fresh in backends.items():
            run: dict[str, float] = {}
            with fresh() as url:
                run |= storage_run(url, args.rows, seed)
            if name == "postgresql":
                with fresh() as url:
                    run |= insert_run(url, args.rows, seed)
            with fresh() as url:
                run |= api_run(url, args.batches)
            if has_data:
                with fresh() as url:
                    run |= import_run(url, args.data)
            runs[name].append(run)
            print(f"run {seed + 1}/{args.runs} {name} done", flush=True)
    results = {name: median(r) for name, r in runs.items()}
    for name, values in results.items():
        for key, value in values.items():
            print(f"{name} {key}: {value:,.2f} (median of {args.runs})")
    with psycopg.connect(args.pg) as conn:
        server = conn.execute("SHOW server_version").fetchone()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "pg_ingest",
                "data": "synthetic events (bench_storage.synthetic_events) for storage and "
                "api_batches; UCI Online Retail (real) for import"
                + ("" if has_data else " (absent: skipped)"),
                "rows": args.rows,
                "batches": args.batches,
                "runs": args.runs,
                "median": results,
                "all_runs": runs,
                "postgresql": {"server_version": server[0] if server else None, "url": args.pg},
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "note": "PostgreSQL on loopback, same machine, shared with other work",
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
