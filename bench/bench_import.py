"""Bulk import throughput on the REAL UCI Online Retail file (541,909 rows).

Each run imports the whole file with ``import_dataset`` into a fresh SQLite store in
a temporary directory, as ``shopcast import dataset online-retail`` does: read and
reshape the file (``load``), clean the events (``clean``), upsert items and users and
append the events (``store``); then imports it again (every event a duplicate). Runs
use the CLI's chunk size (50,000 rows) and, for comparison, one chunk for the file.

Prints rows/s (rows read / total seconds, median of ``--runs``) and where the time
goes, and writes everything to ``bench/results/import.json``.
Usage: ``python bench/bench_import.py [--runs 3] [--data PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from shopcast.config import default_data_path
from shopcast.ingest.datasets import DATASETS
from shopcast.ingest.importer import import_dataset
from shopcast.storage import open_store

RESULTS = Path(__file__).parent / "results" / "import.json"
DATASET = "online-retail"
CHUNKS = {"chunks_of_50k": 50_000, "one_chunk": 10**9}


def one_run(data_path: Path, chunk_rows: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/bench.db")
        try:
            first = import_dataset(store, DATASET, data_path=data_path, chunk_rows=chunk_rows)
            again = import_dataset(store, DATASET, data_path=data_path, chunk_rows=chunk_rows)
        finally:
            store.close()
    assert again.accepted == 0 and again.duplicates == first.accepted + first.duplicates
    return {
        "rows_read": first.rows_read,
        "accepted": first.accepted,
        "duplicates": first.duplicates,
        "seconds": first.seconds,
        "rows_per_s": first.rows_per_s,
        **{f"seconds_{phase}": s for phase, s in sorted(first.timings.items())},
        "reimport_rows_per_s": again.rows_per_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=default_data_path())
    args = parser.parse_args()
    if not (args.data / DATASETS[DATASET].folder).is_dir():
        sys.exit(f"{DATASET} not found under {args.data}; set SHOPCAST_DATA or pass --data")
    results: dict[str, dict[str, object]] = {}
    for name, chunk_rows in CHUNKS.items():
        runs = [one_run(args.data, chunk_rows) for _ in range(args.runs)]
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        results[name] = {"chunk_rows": chunk_rows, "runs": runs, "median": median}
        phases = ", ".join(
            f"{k.removeprefix('seconds_')} {v:.2f} s" for k, v in median.items()
            if k.startswith("seconds_")
        )  # fmt: skip
        print(
            f"{name}: {median['rows_per_s']:,.0f} rows/s ({median['seconds']:.2f} s; {phases}); "
            f"re-import {median['reimport_rows_per_s']:,.0f} rows/s (median of {args.runs})"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "import",
                "data": "UCI Online Retail (real), Online_Retail.parquet",
                "backend": "sqlite",
                "results": results,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
