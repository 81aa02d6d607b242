"""Fit and scoring speed of the models on 1M SYNTHETIC events.

Run: ``.venv/bin/python bench/bench_models.py [--events N]``; prints the figures and
writes them to ``bench/results/models.json``. The events are synthetic: shoppers
browse sessions within one of 500 categories of 100 items each, with skewed item
popularity, over 90 days.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import polars as pl

from shopcast.models import Context, CoVisitation, Interactions, Popularity, Vocabulary
from shopcast.storage._protocols import EVENT_COLUMNS

RESULTS = Path(__file__).parent / "results" / "models.json"
T0 = 1_700_000_000.0
N_CATEGORIES, PER_CATEGORY = 500, 100


def synthetic_frame(n_events: int, seed: int = 0) -> pl.DataFrame:
    """Synthetic sessions of about five events with ``EVENT_COLUMNS``."""
    rng = np.random.default_rng(seed)
    n_sessions = n_events // 5
    session = np.sort(rng.integers(0, n_sessions, n_events))
    category = rng.integers(0, N_CATEGORIES, n_sessions)[session]
    rank = np.minimum(rng.zipf(1.3, n_events) - 1, PER_CATEGORY - 1)
    item = category * PER_CATEGORY + rank
    user = rng.integers(0, n_sessions // 2, n_sessions)[session]
    anonymous = (rng.random(n_sessions) < 0.3)[session]
    start = T0 + rng.random(n_sessions)[session] * 90 * 86_400
    ts = start + rng.random(n_events) * 1_800
    kinds = np.array(["view", "add_to_cart", "purchase", "impression"])
    kind = kinds[rng.choice(4, n_events, p=[0.85, 0.08, 0.03, 0.04])]
    columns = {
        "event_id": pl.Series(np.arange(n_events)).cast(pl.String),
        "type": kind,
        "user_id": pl.Series(user).cast(pl.String).set(pl.Series(anonymous), None),
        "session_id": pl.Series(session).cast(pl.String),
        "item_id": pl.Series(item).cast(pl.String),
        "ts": ts,
    }
    frame = pl.DataFrame(columns)
    nulls = [pl.lit(None, pl.String).alias(c) for c in EVENT_COLUMNS if c not in columns]
    return frame.with_columns(nulls).select(EVENT_COLUMNS)


def timed(fn: Callable[[], object], repeat: int = 1) -> list[float]:
    """Wall-clock seconds of each of ``repeat`` calls."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--candidates", type=int, default=10_000)
    args = parser.parse_args()

    frame = synthetic_frame(args.events)
    users, items = Vocabulary(), Vocabulary()
    start = time.perf_counter()
    events = Interactions.from_frame(frame, users=users, items=items)
    from_frame_s = time.perf_counter() - start
    online = Interactions.from_frame(synthetic_frame(1_000, seed=1), users=users, items=items)

    rng = np.random.default_rng(2)
    candidates = rng.choice(len(items), args.candidates, replace=False).astype(np.int64)
    context = Context(now=T0, recent_items=events.item[-20:].copy())

    figures: dict[str, object] = {
        "events": args.events,
        "events_after_cleaning": len(events),
        "users": len(users),
        "items": len(items),
        "candidates": args.candidates,
        "context_items": 20,
        "from_frame_s": round(from_frame_s, 3),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "data": "synthetic",
    }
    models: list[Popularity | CoVisitation] = [Popularity(), CoVisitation()]
    for model in models:
        fit_s = timed(partial(model.fit, events))[0]
        score_s = timed(partial(model.score, context, candidates), repeat=200)
        learn_s = timed(partial(model.learn, online))[0]
        with TemporaryDirectory() as tmp:
            save_s = timed(partial(model.save, Path(tmp)))[0]
            load_s = timed(partial(type(model).load, Path(tmp), items))[0]
        entry: dict[str, object] = {
            "fit_s": round(fit_s, 3),
            "score_10k_ms_median": round(statistics.median(score_s) * 1e3, 3),
            "score_10k_ms_p95": round(float(np.percentile(score_s, 95)) * 1e3, 3),
            "learn_1k_events_ms": round(learn_s * 1e3, 2),
            "save_s": round(save_s, 3),
            "load_s": round(load_s, 3),
        }
        if isinstance(model, CoVisitation):
            entry["nnz"] = int(model.matrix_.nnz)
        figures[model.name] = entry

    print(json.dumps(figures, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
