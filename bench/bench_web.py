"""Costs of the dashboard's endpoints on the REAL UCI Online Retail log (skipped when absent).

- ``EventStats``: the first refresh (reads the whole log once), then an incremental
  refresh after each POST of a 10-event batch (what every dashboard poll pays).
- ``GET /v1/dashboard/overview`` and each SVG chart through the API (TestClient,
  in-process: no network), median and p95 of repeated calls.
- ``GET /v1/shop/items`` (catalog page with a word filter).

Writes ``bench/results/web.json``.
Usage: ``nice -n 10 python bench/bench_web.py [--runs 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from fastapi.testclient import TestClient

from shopcast.api import create_app
from shopcast.config import Settings, default_data_path
from shopcast.errors import DatasetNotFoundError
from shopcast.ingest.importer import import_dataset
from shopcast.storage import open_store
from shopcast.training.bundle import save_bundle, train_bundle
from shopcast.web.stats import EventStats

RESULTS = Path(__file__).parent / "results" / "web.json"


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 2),
        "n": len(ordered),
    }


def _timed(fn: Any, runs: int) -> dict[str, float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return _ms(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{tmp / 'shop.db'}",
        model_dir=tmp / "models",
        auth={"enabled": False},
        recommend={"log_impressions": True},
    )
    store = open_store(settings.database_url)
    try:
        t0 = time.perf_counter()
        summary = import_dataset(store, "online-retail", data_path=default_data_path())
        print(f"imported {summary.accepted:,} events in {time.perf_counter() - t0:.1f} s")
    except DatasetNotFoundError as exc:
        print(f"skip: {exc}")
        return
    save_bundle(train_bundle(store, settings.recommend, ranker=False), settings.model_dir)

    stats = EventStats(store)
    t0 = time.perf_counter()
    stats.refresh()
    first_s = time.perf_counter() - t0
    print(f"EventStats first refresh over {stats.total_events:,} events: {first_s:.2f} s")
    store.close()

    result: dict[str, Any] = {
        "dataset": "UCI Online Retail (real)",
        "events": stats.total_events,
        "event_stats_first_refresh_s": round(first_s, 3),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
    }
    with TestClient(create_app(settings)) as client:
        t0 = time.perf_counter()
        client.get("/v1/dashboard/overview")  # the app's own EventStats: first read
        result["overview_first_call_s"] = round(time.perf_counter() - t0, 3)
        n = [0]

        def post_and_overview() -> None:
            now = time.time()
            batch = [
                {
                    "type": "view",
                    "user_id": f"bench-{n[0]}",
                    "item_id": "85123A",
                    "timestamp": now,
                    "event_id": f"bench-{n[0]}-{j}",
                }
                for j in range(10)
            ]
            n[0] += 1
            assert client.post("/v1/events", json=batch).status_code == 202
            t0 = time.perf_counter()
            assert client.get("/v1/dashboard/overview").status_code == 200
            incremental.append(time.perf_counter() - t0)

        incremental: list[float] = []
        for _ in range(args.runs):
            post_and_overview()
        result["overview_after_10_new_events"] = _ms(incremental)
        for name in ("events", "requests", "latency", "daily"):
            url = f"/v1/dashboard/charts/{name}.svg?width=600"
            result[f"chart_{name}"] = _timed(lambda u=url: client.get(u), args.runs)
        result["shop_items_search"] = _timed(
            lambda: client.get("/v1/shop/items?q=heart&limit=24"), args.runs
        )
    for key, value in result.items():
        print(f"{key}: {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
