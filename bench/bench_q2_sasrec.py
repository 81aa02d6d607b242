"""Q2 (BENCHMARKS.md) for SASRec on the REAL Amazon Beauty data (S3-Rec release).

Protocol: per user, last item = test, second to last = validation, the rest = training;
rank ALL items (every item of the release), the user's earlier items excluded;
HR@10, NDCG@10, NDCG@20. Hyperparameters are chosen on validation only (``--set
key=value`` for trials).

1. Selection: SASRec is fitted on every user's sequence without its test item, holding
   out the last one (the validation item): it trains on the training part, and the
   epoch with the best validation NDCG@10 is kept (early stopping). Validation figures
   rank the validation item given the training part.
2. With ``--refit`` (as ``SASRec(refit=True)`` does inside one ``fit``): a fresh model
   trains on training + validation items for the chosen number of epochs. Test figures
   rank the test item given the training part plus the validation item, with the
   selection model (the default, as ``shopcast evaluate q2`` runs it) or the refit one.

Training time is both fits together: wall seconds, and CPU seconds of the process
(on a busy machine the CPU seconds of a one-thread run are the wall time it takes
alone).

Prints the figures, train seconds and peak RSS, and writes
``bench/results/q2_sasrec.json`` (``--out``). ``--save DIR`` keeps the tested model
(``SASRec.save``) with ``items.json``, the item ids in the model's index order, so
another process can ``SASRec.load(DIR, Vocabulary(ids))`` and score. ``--users N``
evaluates on a seeded sample of N users (for quick trials; the JSON is then not written
unless ``--out``).
Usage: ``python bench/bench_q2_sasrec.py [--users N] [--set hidden=128 ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shopcast.config import default_data_path
from shopcast.domain import EventType
from shopcast.ingest.datasets import AMAZON_BASE_TS, load_dataset
from shopcast.models import Context, Interactions, Vocabulary
from shopcast.models._base import EVENT_CODES
from shopcast.models.sasrec import EpochReport, ItemAttributes, SASRec

RESULTS = Path(__file__).parent / "results" / "q2_sasrec.json"
KS = (10, 20)
#: Q2's budget, as ``shopcast evaluate q2`` fixes it: 840 CPU seconds of one thread.
CHOSEN: dict[str, Any] = {"max_seconds": 840.0, "clock": "cpu", "threads": 1}


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def sequences(frame: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Users and their item sequences, in file order."""
    ordered = frame.with_row_index("_row").sort(["user_id", "timestamp", "_row"])
    grouped = ordered.group_by("user_id", maintain_order=True).agg(pl.col("item_id"))
    return grouped["user_id"].to_list(), grouped["item_id"].to_list()


def interactions(
    users: list[str], seqs: list[list[str]], items: Vocabulary, drop_last: int
) -> Interactions:
    """Purchase events of every sequence without its last ``drop_last`` items."""
    vocab = Vocabulary(f"u:{u}" for u in users)
    user_idx: list[int] = []
    item_idx: list[int] = []
    ts: list[float] = []
    for u, s in enumerate(seqs):
        kept = s[: len(s) - drop_last]
        user_idx += [u] * len(kept)
        item_idx += [items.index(i) for i in kept]
        ts += [AMAZON_BASE_TS + 86_400.0 * k for k in range(len(kept))]
    order = np.argsort(np.asarray(ts), kind="stable")
    n = len(ts)
    return Interactions(
        users=vocab,
        items=items,
        user=np.asarray(user_idx, dtype=np.int64)[order],
        item=np.asarray(item_idx, dtype=np.int64)[order],
        type=np.full(n, EVENT_CODES[EventType.PURCHASE], dtype=np.int64),
        ts=np.asarray(ts, dtype=np.float64)[order],
        value=np.full(n, np.nan),
    )


def evaluate(
    model: SASRec, histories: list[np.ndarray], targets: np.ndarray, n_items: int
) -> dict[str, float]:
    """HR@10, NDCG@10, NDCG@20 (and HR@20) of ``targets`` given ``histories``."""
    ranks: list[int] = []
    for b in range(0, len(histories), 1024):
        hist = histories[b : b + 1024]
        scores = model.score_all([Context(now=0.0, recent_items=h) for h in hist])
        scores = np.pad(scores, ((0, 0), (0, n_items - scores.shape[1])))
        for r, h in enumerate(hist):
            scores[r, h] = -np.inf
        mine = scores[np.arange(len(hist)), targets[b : b + 1024]]
        ranks += (scores > mine[:, None]).sum(axis=1).tolist()
    rank = np.asarray(ranks)
    out: dict[str, float] = {}
    for k in KS:
        hit = rank < k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_path())
    parser.add_argument("--users", type=int, default=None, help="seeded user sample")
    parser.add_argument("--set", nargs="*", default=[], help="hyperparameters key=value")
    parser.add_argument("--no-attributes", action="store_true")
    parser.add_argument("--refit", action="store_true", help="test with a refitted model")
    parser.add_argument("--save", type=Path, default=None, help="save the tested model here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    frames = load_dataset("amazon-s3rec", data_path=args.data)
    users, seqs = sequences(frames.events)
    if args.users is not None and args.users < len(users):
        pick = np.sort(np.random.default_rng(0).choice(len(users), args.users, replace=False))
        users = [users[i] for i in pick]
        seqs = [seqs[i] for i in pick]
    items = Vocabulary(dict.fromkeys(i for s in seqs for i in s))
    attributes = ItemAttributes.from_items(frames.items)
    params = CHOSEN | {k: parse_value(v) for k, v in (a.split("=", 1) for a in args.set)}
    attrs = None if args.no_attributes else attributes

    def show(r: EpochReport) -> None:
        line = f"epoch {r.epoch:3d}  loss {r.loss:.4f}  val NDCG@10 {r.val_ndcg:.4f}"
        print(f"{line}  {r.seconds:.1f}s" + ("  (refit)" if r.refit else ""), flush=True)

    data = interactions(users, seqs, items, drop_last=1)
    idx = [np.asarray([items.index(i) for i in s], dtype=np.int64) for s in seqs]
    n_items = len(items)
    # 1. Selection: train on the training part, early stopping on the validation item.
    t0, c0 = time.perf_counter(), time.process_time()
    model = SASRec(**(params | {"refit": False})).fit(data, attributes=attrs, progress=show)
    select_s, select_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    val = evaluate(model, [s[:-2] for s in idx], np.array([s[-2] for s in idx]), n_items)
    print("validation " + "  ".join(f"{k} {v:.4f}" for k, v in val.items()), flush=True)
    # 2. Refit on training + validation items for the chosen number of epochs.
    refit_s = refit_cpu_s = 0.0
    final = model
    if args.refit:
        t0, c0 = time.perf_counter(), time.process_time()
        final = SASRec(
            **(params | {"holdout": False, "epochs": model.best_epoch_})
            | {"decay_epochs": model.decay_epochs or model.epochs}
        )
        final.fit(data, attributes=attrs, progress=show)
        refit_s, refit_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    test_inputs, test_targets = [s[:-1] for s in idx], np.array([s[-1] for s in idx])
    test = evaluate(final, test_inputs, test_targets, n_items)
    test_selection = test if final is model else evaluate(model, test_inputs, test_targets, n_items)
    train_s, train_cpu_s = select_s + refit_s, select_cpu_s + refit_cpu_s
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = {
        "benchmark": "Q2",
        "dataset": "amazon-beauty (S3-Rec)",
        "model": "sasrec",
        "users": len(users),
        "items": n_items,
        "params": model._params(),
        "attributes": not args.no_attributes,
        "refit": args.refit,
        "best_epoch": model.best_epoch_,
        "epochs_run": len(model.history_),
        "train_s": round(train_s, 1),
        "train_cpu_s": round(train_cpu_s, 1),
        "select_s": round(select_s, 1),
        "refit_s": round(refit_s, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "validation": val,
        "test": test,
        "test_of_selection_model": test_selection,
        "history": [
            {"epoch": r.epoch, "loss": r.loss, "val_ndcg": r.val_ndcg, "seconds": r.seconds}
            for r in model.history_
        ],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    for split, m in (("validation", val), ("test", test)):
        print(f"{split:10s} " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))
    print(f"train {train_s:.0f} s (CPU {train_cpu_s:.0f} s), best epoch {model.best_epoch_}")
    print(f"peak RSS {peak_mb:.0f} MiB")
    if args.save is not None:
        final.save(args.save)
        (args.save / "items.json").write_text(json.dumps(items.ids) + "\n")
        print(f"saved the model to {args.save}")
    out = args.out or (RESULTS if args.users is None else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
