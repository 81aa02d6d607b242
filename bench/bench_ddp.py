"""Data-parallel training (``shopcast.training.distributed``) vs one process, on real data.

    python bench/bench_ddp.py [--world 2] [--epochs 2] [--data DIR] [--out FILE]

MovieLens 100K (real; ``SHOPCAST_DATA``/movielens-100k): the hybrid rating head on the
explicit ratings and the hybrid ranker on the same events, each fitted once in this
process and once by ``world`` gloo processes (dropout off, so both are deterministic),
same seed and global batch. Prints and writes (``bench/results/ddp.json``): wall seconds,
CPU seconds (this process and its children), the largest absolute difference of any
parameter (the ranker's item-tower output bias left out: the softmax ignores it, see
``tests/training/test_distributed.py``) and of the scores of 50 users over every item.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from shopcast.ingest.datasets import load_dataset
from shopcast.ingest.importer import import_events
from shopcast.models._base import Context, Interactions, Vocabulary
from shopcast.models.hybrid import HybridRanker, HybridRating
from shopcast.storage import open_store
from shopcast.training.distributed import fit_distributed

RESULTS = Path(__file__).parent / "results" / "ddp.json"
GAUGE = {"item.mlp.2.bias"}


def cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fit: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), cpu_s()
    model = fit()
    return model, time.perf_counter() - wall, cpu_s() - cpu


def max_param_diff(a: Any, b: Any, skip: set[str]) -> float:
    out = 0.0
    for x, y in zip(a.nets_, b.nets_, strict=True):
        sa, sb = x.state_dict(), y.state_dict()
        for name in sa:
            if name not in skip:
                out = max(out, float((sa[name] - sb[name]).abs().max()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    frames = load_dataset("movielens-100k", args.data)
    store = open_store("memory://")
    import_events(store, frames.events)
    data = Interactions.from_frame(store.events.frame(), users=Vocabulary(), items=Vocabulary())
    common = {
        "epochs": args.epochs,
        "dim": 32,
        "hidden": 64,
        "dropout": 0.0,
        "holdout": 0.0,
        "seed": 0,
        "threads": 1,
    }
    heads: dict[str, tuple[type[Any], dict[str, Any], set[str]]] = {
        "hybrid_rating": (HybridRating, common | {"batch_size": 2048}, set()),
        "hybrid": (HybridRanker, common | {"batch_size": 256, "negatives": 256}, GAUGE),
    }
    users = np.arange(min(50, len(data.users)))
    items = np.arange(len(data.items))
    out: dict[str, Any] = {
        "dataset": "movielens-100k (real)",
        "events": len(data),
        "world": args.world,
        "epochs": args.epochs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_start": os.getloadavg()[0],
        "heads": {},
    }
    for name, (cls, params, skip) in heads.items():
        print(f"{name}: 1 process …", flush=True)
        one, wall1, cpu1 = timed(lambda c=cls, p=params: c(**p).fit(data))
        print(f"{name}: {args.world} processes …", flush=True)
        many, wall2, cpu2 = timed(
            lambda c=cls, p=params: fit_distributed(c(**p), data, world=args.world)
        )
        score_diff = 0.0
        for u in users.tolist():
            ctx = Context(now=float(data.ts.max()), user_id=data.users.id(u)[2:])
            score_diff = max(
                score_diff, float(np.abs(one.score(ctx, items) - many.score(ctx, items)).max())
            )
        row = {
            "wall_s_1proc": round(wall1, 2),
            "wall_s_ddp": round(wall2, 2),
            "cpu_s_1proc": round(cpu1, 2),
            "cpu_s_ddp": round(cpu2, 2),
            "max_abs_param_diff": max_param_diff(one, many, skip),
            "max_abs_score_diff": score_diff,
            "final_loss_1proc": one.history_[-1].loss,
            "final_loss_ddp": many.history_[-1].loss,
        }
        out["heads"][name] = row
        print(name, json.dumps(row), flush=True)
    out["load_average_end"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
