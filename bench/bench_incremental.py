"""Incremental training versus full retraining, on REAL data (UCI Online Retail, Q3).

Setting: the model in service was trained 30 days before the Q3 cutoff (2011-10-02);
the 30 days until the cutoff bring new purchases. Each arm brings the model up to the
cutoff and is scored on the Q3 test (each customer's new items bought from 2011-11-01,
all items ranked, history excluded): NDCG@10 and Recall@20 (capped). iALS is scored
twice: as served (``score_all`` folds each customer's recent items in at query time)
and from the stored user factors alone ("stored"), which is what an update changes.

- iALS (``--factors``, default 32): ``full`` = a cold fit on everything before the cutoff (15
  iterations); ``stale`` = the 30-day-old model unchanged; ``fold-in`` =
  ``OnlineALS.learn`` of the 30 days (closed-form user and item solves only);
  ``warm-N`` = a refit of N iterations started from the old factors.
- the serving bundle's count models (popularity, co-visitation): ``full`` = ``fit`` on
  everything; ``incremental`` = the old model's ``learn`` of the 30 days.

Times are the update only (the old model's own fit is not counted), median of
``--repeat`` runs. Run (2 shared cores):
``OPENBLAS_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_incremental.py``;
writes ``bench/results/incremental.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _feedback_data import interactions, machine, online_retail

from shopcast.config import RecommendSettings
from shopcast.evaluation.harness import evaluate_ranking
from shopcast.models import Interactions
from shopcast.models._base import Context
from shopcast.models.ials import ImplicitALS
from shopcast.training.bundle import make_models
from shopcast.training.foldin import OnlineALS

RESULTS = Path(__file__).parent / "results" / "incremental.json"
DAYS = 30


class Stored:
    """iALS scored from its stored user factors only (``score_all`` otherwise folds the
    request's recent items in at query time, which hides a stale model)."""

    def __init__(self, model: ImplicitALS) -> None:
        self.model = model

    def score_all(self, contexts: Sequence[Context]) -> np.ndarray:
        m = self.model
        rows = np.array([m.subjects_.of(c) for c in contexts], dtype=np.int64)
        users = np.where(rows[:, None] >= 0, m.P_[np.maximum(rows, 0)], 0.0)
        return np.asarray(users @ m.Q_.T, dtype=np.float64)

    def score(self, context: Context, candidates: np.ndarray) -> np.ndarray:
        return self.score_all([context])[0][candidates]


def timed(fn: Callable[[], Any], repeat: int) -> tuple[Any, float]:
    out, times = None, []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--factors", type=int, default=32)
    args = parser.parse_args()
    q3 = online_retail()
    task = q3.task
    items = task.train.items
    start = q3.cutoff - DAYS * 86_400.0
    old = q3.train.filter(pl.col("ts") < start)
    new = q3.train.filter(pl.col("ts") >= start)
    full_data = interactions(q3.train, items)
    print(f"Online Retail Q3: {q3.train.height} training lines, {old.height} before "
          f"{DAYS} days, {new.height} in them; {len(task.contexts)} test customers")  # fmt: skip

    def score(model: Any) -> dict[str, float]:
        out = {}
        arms = [("", model)]
        if isinstance(model, ImplicitALS):  # also what the stored user factors know
            arms.append(("stored ", Stored(model)))
        for label, m in arms:
            r = evaluate_ranking(m, task, (10, 20), capped_recall=True, metrics=("NDCG", "Recall"))
            out[f"{label}NDCG@10"] = round(r["NDCG@10"], 4)
            out[f"{label}Recall@20"] = round(r["Recall@20"], 4)
        return out

    rows: list[dict[str, Any]] = []

    def row(family: str, arm: str, seconds: float, model: Any, events: int) -> None:
        r = {
            "model": family,
            "arm": arm,
            "update_s": round(seconds, 3),
            "events": events,
            **score(model),
        }
        rows.append(r)
        print(json.dumps(r))

    f = args.factors
    full, t = timed(
        lambda: ImplicitALS(n_factors=f, iterations=15, seed=0).fit(full_data), args.repeat
    )
    row("ials", "full (15 it)", t, full, full_data.user.shape[0])
    old_data = interactions(old, items)
    base = OnlineALS(n_factors=f, iterations=15, seed=0).fit(old_data)
    row("ials", "stale", 0.0, base, 0)

    def fold() -> OnlineALS:
        m = copy.deepcopy(base)  # the same old model each time
        inc = interactions(new, items)
        started = time.perf_counter()
        m.learn(inc)
        m.learn_s_ = time.perf_counter() - started  # type: ignore[attr-defined]
        return m

    runs = [fold() for _ in range(args.repeat)]
    learn_s = statistics.median(r.learn_s_ for r in runs)  # type: ignore[attr-defined]
    row("ials", "fold-in", learn_s, runs[-1], new.height)
    # the serving path: one ingested event at a time (the first 2,000 of the 30 days)
    online = copy.deepcopy(base)
    inc = interactions(new.sort("ts").head(2000), items)
    per_event = []
    for k in range(len(inc)):
        one = Interactions(
            users=inc.users, items=inc.items, user=inc.user[k : k + 1], item=inc.item[k : k + 1],
            type=inc.type[k : k + 1], ts=inc.ts[k : k + 1], value=inc.value[k : k + 1],
        )  # fmt: skip
        started = time.perf_counter()
        online.learn(one)
        per_event.append((time.perf_counter() - started) * 1000)
    lat = {
        "p50_ms": round(float(np.median(per_event)), 3),
        "p95_ms": round(float(np.percentile(per_event, 95)), 3),
    }
    rows.append({"model": "ials", "arm": "fold-in, one event at a time", **lat, "events": len(inc)})
    print(json.dumps(rows[-1]))
    for it in (1, 2, 4):
        warm, t = timed(
            lambda it=it: OnlineALS(n_factors=f, seed=0).warm_start(base, full_data, iterations=it),
            args.repeat,
        )
        row("ials", f"warm-{it}", t, warm, full_data.user.shape[0])

    cfg = RecommendSettings()
    for role in ("popularity", "covisit"):
        model, t = timed(lambda role=role: make_models(cfg)[role].fit(full_data), args.repeat)
        row(role, "full", t, model, full_data.user.shape[0])
        stale = make_models(cfg)[role].fit(old_data)
        row(role, "stale", 0.0, stale, 0)
        times = []
        for _ in range(args.repeat):
            m = copy.deepcopy(stale)
            inc = interactions(new, items)
            started = time.perf_counter()
            m.learn(inc)  # type: ignore[attr-defined]
            times.append(time.perf_counter() - started)
        row(role, "incremental", statistics.median(times), m, new.height)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = {"dataset": "UCI Online Retail (REAL), Q3", "days_new": DAYS, "machine": machine()}
    RESULTS.write_text(json.dumps({**out, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
