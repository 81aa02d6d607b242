"""Q1 and Q3 of ``BENCHMARKS.md`` for the hybrid deep model (``hybrid_rating``, ``hybrid``).

    python bench/bench_hybrid.py [q1] [q3] [--folds 1,2,3,4,5] [--set key=value ...]
                                 [--threads N] [--tune] [--no-side] [--data DIR] [--out FILE]

Q1: the official MovieLens 100K folds; ``hybrid_rating`` is fitted on ``uN.base`` with the
users' age/gender/occupation/zip and the films' genres/year/title as side features and
scored on ``uN.test`` (RMSE, MAE per fold and mean; predictions clipped to 1..5).

Q3: UCI Online Retail, lines with a CustomerID, cancellations (invoice ``C…``) and
non-positive quantities removed; train = invoices before 2011-11-01; test = for each
customer seen in training, the distinct items bought on or after that date that the
customer had not bought before; every item is ranked with the customer's training items
excluded; Recall@10/20 (denominator min(K, |test|)) and NDCG@10; also the "buy again"
variant (every item bought in the test period, history allowed). Side features: each
item's description (TF-IDF), median price and the customer's country.

Hyperparameters are the model defaults or ``--set``; ``--tune`` only fits on training
data and prints the model's own validation figure (its holdout carved from training),
never touching the test sets. Writes ``bench/results/hybrid.json`` (merged per benchmark).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shopcast.config import default_data_path
from shopcast.evaluation import metrics as M
from shopcast.evaluation import splits as S
from shopcast.evaluation.harness import rank, ranking_task, rating_task
from shopcast.models.hybrid import EpochReport, HybridRanker, HybridRating, SideFeatures

RESULTS = Path(__file__).parent / "results" / "hybrid.json"
Q3_CUTOFF = "2011-11-01"


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _progress(label: str) -> Any:
    def show(r: EpochReport) -> None:
        phase = "refit" if r.refit else "fit"
        print(
            f"  {label} {phase} epoch {r.epoch:3d}  loss {r.loss:.4f}  val {r.val:.4f}  "
            f"{r.seconds:7.1f} s",
            flush=True,
        )

    return show


def _timing(model: Any) -> dict[str, Any]:
    return {
        "train_s": round(model.fit_seconds_, 1),
        "best_epoch": model.best_epoch_,
        "best_val": model.best_val_,
        "peak_rss_mb": round(model.peak_rss_mb_, 1),
    }


# -- Q1 ---------------------------------------------------------------------------------------


def run_q1(
    data: Path, folds: list[int], params: dict[str, Any], tune: bool, side: bool
) -> dict[str, Any]:
    from shopcast.ingest.datasets import load_movielens_100k

    folder = data / "movielens-100k"
    frames = load_movielens_100k(folder)
    features = SideFeatures.from_records(frames.items, frames.users) if side else None
    out: dict[str, Any] = {"params": params, "side_features": side, "folds": {}}
    for k in folds:
        fold = S.read_movielens_fold(folder, k)
        task = rating_task(fold.train, fold.test)
        model = HybridRating(**params)
        model.fit(task.train, side=features, progress=_progress(f"u{k}"))
        row: dict[str, Any] = _timing(model)
        if not tune:
            pred = model.predict(task.user, task.item)
            row |= {"RMSE": M.rmse(task.rating, pred), "MAE": M.mae(task.rating, pred)}
        print(f"u{k}: {row}", flush=True)
        out["folds"][f"u{k}"] = row
    if not tune:
        for metric in ("RMSE", "MAE"):
            out[metric] = float(np.mean([r[metric] for r in out["folds"].values()]))
        print(f"Q1 mean RMSE {out['RMSE']:.4f}  MAE {out['MAE']:.4f}")
    else:
        out["val_RMSE"] = float(np.mean([r["best_val"] for r in out["folds"].values()]))
        print(f"Q1 mean validation RMSE {out['val_RMSE']:.4f}")
    return out


# -- Q3 ---------------------------------------------------------------------------------------


def q3_data(data: Path) -> tuple[pl.DataFrame, SideFeatures]:
    """Purchase lines with a CustomerID (cancellations and non-positive quantities are
    removed by the loader) and the side features of items and customers."""
    from shopcast.ingest.datasets import load_online_retail

    frames = load_online_retail(data / "uci-online-retail")
    events = frames.events.filter(pl.col("user_id").is_not_null())
    frame = S.event_frame(events.rename({"timestamp": "ts"}).drop("session_id"))
    return frame, SideFeatures.from_records(frames.items, frames.users)


def run_q3(data: Path, params: dict[str, Any], tune: bool, side: bool) -> dict[str, Any]:
    frame, features = q3_data(data)
    cutoff = S.to_epoch(Q3_CUTOFF)
    if tune:  # validation: the 31 days before the cutoff, as `shopcast evaluate q3` tunes
        return q3_validation(frame, features if side else None, cutoff, params)
    split = S.temporal_split(frame, cutoff)
    task = ranking_task(split.train, split.test, now=cutoff)
    model = HybridRanker(**params)
    model.fit(task.train, side=features if side else None, progress=_progress("q3"))
    out: dict[str, Any] = {"params": params, "side_features": side} | _timing(model)
    t0 = time.perf_counter()
    top = rank(model, task, 20)
    out["score_s"] = round(time.perf_counter() - t0, 1)
    out |= M.ranking_metrics(
        top, task.relevant, (10, 20), capped_recall=True, metrics=("Recall", "NDCG")
    )
    again = S.temporal_split(frame, cutoff, new_items_only=False)
    again_task = ranking_task(task.train, again.test, exclude_history=False, now=cutoff)
    top = rank(model, again_task, 20)
    metrics = M.ranking_metrics(
        top, again_task.relevant, (10, 20), capped_recall=True, metrics=("Recall", "NDCG")
    )
    out |= {f"buy_again.{k}": v for k, v in metrics.items()}
    out["customers"] = len(task.contexts)
    print("Q3 " + "  ".join(f"{k} {v:.4f}" for k, v in out.items() if "@" in k), flush=True)
    return out


def q3_validation(
    frame: pl.DataFrame, features: SideFeatures | None, cutoff: float, params: dict[str, Any]
) -> dict[str, Any]:
    """NDCG@10 on the new items of the 31 days before the cutoff, for the hybrid model
    fitted on what came before and for EASE (reg 250) beside it."""
    from shopcast.models import EASE

    val_cutoff = cutoff - Q3_VALIDATION_DAYS * 86_400.0
    split = S.temporal_split(frame.filter(pl.col("ts") < cutoff), val_cutoff)
    task = ranking_task(split.train, split.test, now=val_cutoff)
    out: dict[str, Any] = {"params": params}
    model = HybridRanker(**params)
    model.fit(task.train, side=features, progress=_progress("q3-val"))
    top = rank(model, task, 10)
    out["hybrid"] = M.ranking_metrics(top, task.relevant, (10,), capped_recall=True)["NDCG@10"]
    if "ease" not in _REFERENCE:
        top = rank(EASE(reg=250.0).fit(task.train), task, 10)
        _REFERENCE["ease"] = M.ranking_metrics(top, task.relevant, (10,), capped_recall=True)[
            "NDCG@10"
        ]
    out["ease"] = _REFERENCE["ease"]
    out |= _timing(model)
    print(f"Q3 validation NDCG@10: hybrid {out['hybrid']:.4f}  EASE {out['ease']:.4f}", flush=True)
    return out


_REFERENCE: dict[str, float] = {}
Q3_VALIDATION_DAYS = 31


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmarks", nargs="*", default=["q1", "q3"], choices=["q1", "q3"])
    parser.add_argument("--folds", default="1,2,3,4,5")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tune", action="store_true", help="validation only (no test sets)")
    parser.add_argument("--no-side", action="store_true", help="without side features")
    parser.add_argument("--data", type=Path, default=default_data_path())
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    params = {k: _value(v) for k, v in (p.split("=", 1) for p in args.set)}
    if args.threads is not None:
        params["threads"] = args.threads
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.benchmarks:
        t0 = time.perf_counter()
        if name == "q1":
            folds = [int(f) for f in args.folds.split(",")]
            res = run_q1(args.data, folds, params, args.tune, not args.no_side)
        else:
            res = run_q3(args.data, params, args.tune, not args.no_side)
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        res["hardware"] = f"{platform.machine()}, Python {platform.python_version()}"
        res["command"] = " ".join(sys.argv)
        if not args.tune:
            results[name] = res
    if any(not args.tune for _ in args.benchmarks):
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
