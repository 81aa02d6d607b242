"""Shared by bench_incremental.py and bench_compression.py: the REAL UCI Online Retail
purchases on the Q3 protocol (docs/benchmarks.md), as evaluation tasks."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from shopcast.config import default_data_path
from shopcast.evaluation import splits as S
from shopcast.evaluation.harness import RankingTask, ranking_task
from shopcast.ingest.datasets import load_online_retail
from shopcast.models import Interactions, Vocabulary

CUTOFF = "2011-11-01"  # Q3


@dataclass
class Q3:
    frame: pl.DataFrame  # every purchase line with a CustomerID (event frame)
    train: pl.DataFrame  # before the cutoff
    task: RankingTask  # Q3 test task (new items per customer, history excluded)
    cutoff: float


def online_retail(path: Path | None = None) -> Q3:
    path = path or default_data_path() / "uci-online-retail"
    frames = load_online_retail(path)
    events = frames.events.filter(pl.col("user_id").is_not_null())
    frame = S.event_frame(events.rename({"timestamp": "ts"}).drop("session_id"))
    cutoff = S.to_epoch(CUTOFF)
    split = S.temporal_split(frame, cutoff)
    task = ranking_task(split.train, split.test, now=cutoff)
    return Q3(frame, split.train, task, cutoff)


def interactions(frame: pl.DataFrame, items: Vocabulary) -> Interactions:
    """``frame``'s events over a copy of ``items`` (the task's item indices)."""
    return Interactions.from_frame(frame, items=Vocabulary(items.ids))


def machine() -> dict[str, object]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "note": "2 CPU cores shared with 5 other engineers (loaded); OPENBLAS_NUM_THREADS=1",
    }
