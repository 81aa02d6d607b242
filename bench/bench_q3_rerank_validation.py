"""Q3 development loop for the ``rerank`` model, on the VALIDATION month only.

Train = purchase lines before 2011-10-01, target = the new items each customer bought in
October 2011 (the split ``shopcast evaluate q3`` tunes on). Nothing on or after the test
cutoff 2011-11-01 is read: the frame is cut there before anything else. This is how the
defaults of ``TwoStageRanker`` were chosen (docs/benchmarks.md, Q3).

    OPENBLAS_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/bench_q3_rerank_validation.py \
        '{"n_windows": 4}'            # rerank with these hyperparameters
    ... bench/bench_q3_rerank_validation.py --ease 500   # EASE at reg 500, for reference
"""

from __future__ import annotations

import json
import logging
import sys
import time

import numpy as np
import polars as pl

from shopcast.config import Settings
from shopcast.evaluation import benchmarks as BM
from shopcast.evaluation import splits as S
from shopcast.evaluation.harness import evaluate_ranking, fit_measured, ranking_task
from shopcast.models import EASE, TwoStageRanker
from shopcast.models.rerank import FEATURES


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    frame, side, _ = BM._q3_events(Settings().data_path / "uci-online-retail")
    cutoff = S.to_epoch(BM.Q3_CUTOFF)
    val_cutoff = cutoff - BM.Q3_VALIDATION_DAYS * 86_400.0
    before = frame.filter(pl.col("ts") < cutoff)  # the test period is never read
    split = S.temporal_split(before, val_cutoff)
    task = ranking_task(split.train, split.test, now=val_cutoff)
    print(f"validation: {task.relevant.shape[0]} customers, {task.relevant.nnz} pairs")
    if argv[:1] == ["--ease"]:
        model: object = EASE(reg=float(argv[1]))
        label = f"ease reg {argv[1]}"
    else:
        params = json.loads(argv[0]) if argv else {}
        model = TwoStageRanker(item_tokens=side.tokens, **params)
        label = f"rerank {params}"
    t0 = time.perf_counter()
    model, stats = fit_measured(model, task.train)
    r = evaluate_ranking(model, task, (10, 20), capped_recall=True, metrics=("NDCG", "Recall"))
    keys = ("NDCG@10", "Recall@10", "Recall@20")
    print(label, {k: round(r[k], 4) for k in keys}, f"fit {stats.train_s:.0f} s")
    print(f"total {time.perf_counter() - t0:.0f} s")
    booster = getattr(model, "booster_", None)
    if booster is not None:
        gain = booster.feature_importance("gain")
        share = sorted(zip(gain / gain.sum(), FEATURES, strict=True), reverse=True)
        print("gain share:", ", ".join(f"{f} {g:.3f}" for g, f in share))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main(sys.argv[1:])
