"""User-profile costs on the REAL shared datasets (skipped when a dataset is absent).

- Incremental: replays a dataset's events (time order, one ``ProfileIndex.observe``
  call per event, as the API does for a one-event POST) into an index that knows the
  catalog and users; prints µs/event (mean, p50, p99, max of the per-call times).
- Batch: the full recompute of Online Retail from its event-log frame
  (``build_states``, then ``refit``: RFM quintiles, feature space, k-means segments).

Writes ``bench/results/profiles.json``.
Usage: ``python bench/bench_profiles.py [--events 100000] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from shopcast.config import Settings, default_data_path
from shopcast.errors import DatasetNotFoundError
from shopcast.features._batch import build_states
from shopcast.features.profile_index import ProfileIndex
from shopcast.ingest.importer import import_dataset
from shopcast.storage import Store, open_store

RESULTS = Path(__file__).parent / "results" / "profiles.json"
SETTINGS = Settings(environment="test", profiles={"reference_time": "log"})


def load(name: str, data_path: Path) -> Store | None:
    store = open_store("memory://")
    try:
        import_dataset(store, name, data_path=data_path)
    except DatasetNotFoundError as exc:
        print(f"skip {name}: {exc}")
        return None
    return store


def replay(store: Store, limit: int) -> dict[str, Any]:
    """Per-event cost of ``observe`` over the first ``limit`` events in time order."""
    events = [e for _, e in store.events.scan(limit=limit)]
    index = ProfileIndex(SETTINGS)
    index.load(store.events.frame().head(0), store.items.scan(), store.users.scan(), refit=False)
    costs = np.empty(len(events))
    clock = time.perf_counter_ns
    for i, event in enumerate(events):
        t0 = clock()
        index.observe((event,))
        costs[i] = clock() - t0
    us = costs / 1000.0
    return {
        "events": len(events),
        "users": len(index.states),
        "us_per_event_mean": round(float(us.mean()), 2),
        "us_per_event_p50": round(float(np.percentile(us, 50)), 2),
        "us_per_event_p99": round(float(np.percentile(us, 99)), 2),
        "us_per_event_max": round(float(us.max()), 2),
    }


def batch(store: Store, runs: int) -> dict[str, Any]:
    """Seconds of the batch recompute (median of ``runs``)."""
    frame = store.events.frame()
    items, users = list(store.items.scan()), list(store.users.scan())
    states_s, total_s = [], []
    n_users = 0
    for _ in range(runs):
        index = ProfileIndex(SETTINGS)
        t0 = time.perf_counter()
        index.load(frame, items, users)
        total_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        n_users = len(build_states(frame, index.items, index.users, index.params))
        states_s.append(time.perf_counter() - t0)
    return {
        "events": frame.height,
        "users": n_users,
        "build_states_s": round(statistics.median(states_s), 3),
        "load_and_refit_s": round(statistics.median(total_s), 3),
        "segments": len(index.segments()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events replayed per set")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data_path = default_data_path().resolve()
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "incremental": {},
        "batch": {},
    }
    for name in ("rees46", "taobao", "online-retail", "movielens-100k"):
        store = load(name, data_path)
        if store is None:
            continue
        result = replay(store, args.events)
        out["incremental"][name] = result
        print(
            f"{name:15s} incremental: {result['events']:>7,} events, "
            f"{result['us_per_event_mean']:.1f} µs/event mean, "
            f"p50 {result['us_per_event_p50']:.1f}, p99 {result['us_per_event_p99']:.1f}, "
            f"max {result['us_per_event_max']:.0f}"
        )
        if name == "online-retail":
            b = batch(store, args.runs)
            out["batch"][name] = b
            print(
                f"{name:15s} batch: {b['events']:,} events, {b['users']:,} users: "
                f"states {b['build_states_s']:.2f} s, with refit {b['load_and_refit_s']:.2f} s"
            )
        store.close()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
