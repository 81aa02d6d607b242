"""Q1 for the rating models: RMSE/MAE on the official MovieLens 100K folds u1..u5.

    python bench/bench_q1_models.py [--models mf,mf_als,svdpp,mf_bayes,blend] [--folds 1,2,3,4,5]
                                    [--split test|val] [--jobs 2] [--data DIR] [--out FILE]

``--split val`` scores a seeded random 10% of ``uN.base`` with the model fitted on the
other 90%: the split on which the default hyperparameters were chosen (``uN.test`` is
never used for tuning). Prints the per-fold table and writes ``bench/results/q1_models.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from shopcast.config import default_data_path
from shopcast.domain import EventType
from shopcast.models import Interactions, Vocabulary, model_class
from shopcast.models._base import EVENT_CODES, RatingPredictor

DEFAULT_MODELS = "mf,mf_als,svdpp,mf_bayes,blend"
VALIDATION_FRACTION = 0.1


def read_fold(folder: Path, fold: int, split: str) -> tuple[Interactions, Any, Any, Any]:
    """``(train, test users, test items, test ratings)``; indices from the train vocabularies."""
    base = np.loadtxt(folder / f"u{fold}.base", dtype=np.int64)
    base = base[np.argsort(base[:, 3], kind="stable")]
    if split == "val":
        held = np.random.default_rng(fold).random(base.shape[0]) < VALIDATION_FRACTION
        base, test = base[~held], base[held]
    else:
        test = np.loadtxt(folder / f"u{fold}.test", dtype=np.int64)
    users, items = Vocabulary(), Vocabulary()
    train = Interactions(
        users=users,
        items=items,
        user=users.indices([f"u:{u}" for u in base[:, 0].tolist()], add=True),
        item=items.indices([str(i) for i in base[:, 1].tolist()], add=True),
        type=np.full(base.shape[0], EVENT_CODES[EventType.RATE], dtype=np.int64),
        ts=base[:, 3].astype(np.float64),
        value=base[:, 2].astype(np.float64),
    )
    tu = users.indices([f"u:{u}" for u in test[:, 0].tolist()])
    ti = items.indices([str(i) for i in test[:, 1].tolist()])
    return train, tu, ti, test[:, 2].astype(np.float64)


def run_one(folder: Path, name: str, fold: int, split: str) -> dict[str, Any]:
    train, tu, ti, r = read_fold(folder, fold, split)
    model = model_class(name)()
    start = time.perf_counter()
    model.fit(train)
    train_s = time.perf_counter() - start
    assert isinstance(model, RatingPredictor), f"{name} does not predict ratings"
    err = model.predict(tu, ti) - r
    return {
        "model": name,
        "fold": fold,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "train_s": round(train_s, 2),
        "params": _params(model),
    }


def _params(model: Any) -> dict[str, Any]:
    """The constructor hyperparameters (public attributes that are JSON values)."""
    out: dict[str, Any] = {}
    for k, v in vars(model).items():
        if k.endswith("_") or k.startswith("_") or callable(v) or v is None:
            continue
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--folds", default="1,2,3,4,5")
    ap.add_argument("--split", choices=("test", "val"), default="test")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--data", type=Path, default=default_data_path() / "movielens-100k")
    ap.add_argument("--out", type=Path, default=Path("bench/results/q1_models.json"))
    args = ap.parse_args()
    names = [m for m in args.models.split(",") if m]
    folds = [int(f) for f in args.folds.split(",") if f]
    if not (args.data / "u1.base").exists():
        raise SystemExit(f"MovieLens 100K folds not found under {args.data}")

    tasks = [(args.data, n, f, args.split) for n in names for f in folds]
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        for row in pool.map(run_one, *zip(*tasks, strict=True)):
            print(f"  {row['model']} u{row['fold']}: RMSE {row['rmse']:.4f}", flush=True)
            rows.append(row)
    total_s = time.perf_counter() - start

    results: dict[str, Any] = {}
    print(f"Q1 MovieLens 100K, split={args.split}: RMSE per fold (MAE mean, train s per fold)")
    header = f"{'model':<10}" + "".join(f"{'u' + str(f):>8}" for f in folds)
    print(header + f"{'mean':>8}{'MAE':>8}{'train_s':>9}")
    for name in names:
        mine = [r for r in rows if r["model"] == name]
        rmse = [r["rmse"] for r in mine]
        mae = [r["mae"] for r in mine]
        secs = [r["train_s"] for r in mine]
        results[name] = {
            "rmse": {f"u{r['fold']}": round(r["rmse"], 4) for r in mine},
            "mae": {f"u{r['fold']}": round(r["mae"], 4) for r in mine},
            "rmse_mean": round(float(np.mean(rmse)), 4),
            "mae_mean": round(float(np.mean(mae)), 4),
            "train_s": {f"u{r['fold']}": r["train_s"] for r in mine},
            "params": mine[0]["params"],
        }
        cells = "".join(f"{v:>8.4f}" for v in rmse)
        print(f"{name:<10}{cells}{np.mean(rmse):>8.4f}{np.mean(mae):>8.4f}{np.mean(secs):>9.1f}")

    out = {
        "benchmark": "q1",
        "dataset": "movielens-100k",
        "protocol": "official folds uN.base/uN.test"
        if args.split == "test"
        else f"validation: seeded {VALIDATION_FRACTION:.0%} of uN.base",
        "split": args.split,
        "target": {"u1_rmse": 0.889, "mean_rmse": 0.900},
        "models": results,
        "wall_s": round(total_s, 1),
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
    }
    if args.split == "val":
        args.out = args.out.with_name(args.out.stem + "_val.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
