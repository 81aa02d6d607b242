"""Utility cost of differential privacy on Q3 (UCI Online Retail, next-month purchases):
SASRec trained with DP-SGD (``shopcast.privacy.dp``) at ε ∈ {1, 4, 8, ∞}.

Protocol: Q3 exactly as ``shopcast evaluate q3`` builds it (``evaluation.benchmarks``:
same cleaning, cutoff 2011-11-01, the customer's training items excluded, full ranking,
Recall@K with denominator min(K, |test|), NDCG@K, same metric code). The model trains on
the training purchases only; DP training runs a fixed number of epochs (no validation-
based early stopping: it would look at the same private data). ε = ∞ is the same network,
optimizer, batch size and epochs without clipping or noise. δ = 1 / training customers;
the unit of privacy is one customer's whole sequence (user-level DP). Item attributes
are not used (the DP network variant does not support them). Popularity (not private)
is printed alongside as the floor.

Writes ``bench/results/dp_q3.json`` (``--out``).
Usage: ``python bench/bench_dp_q3.py [--epochs 4] [--eps 1 4 8 inf]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from shopcast.config import default_data_path
from shopcast.evaluation import splits as S
from shopcast.evaluation.benchmarks import Q3_CUTOFF, _q3_events, hardware
from shopcast.evaluation.harness import evaluate_ranking, ranking_task
from shopcast.models import Popularity
from shopcast.models.sasrec import EpochReport, SASRec
from shopcast.privacy.dp import DPConfig

RESULTS = Path(__file__).parent / "results" / "dp_q3.json"
KS = (10, 20)
METRICS = ("Recall", "NDCG", "HR")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_path() / "uci-online-retail")
    parser.add_argument("--eps", nargs="*", default=["1", "4", "8", "inf"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    frame, _side, source = _q3_events(args.data)
    cutoff = S.to_epoch(Q3_CUTOFF)
    split = S.temporal_split(frame, cutoff)
    task = ranking_task(split.train, split.test, now=cutoff)
    n_users = int(task.relevant.shape[0])
    print(f"{source}: {len(task.train.users)} training customers, {task.n_items} items, "
          f"{n_users} test customers", flush=True)  # fmt: skip

    def score(model: object) -> dict[str, float]:
        out = evaluate_ranking(model, task, KS, capped_recall=True, metrics=METRICS)
        return {k: round(float(v), 4) for k, v in out.items() if "@" in k}

    floor = score(Popularity().fit(task.train))
    print("popularity  " + "  ".join(f"{k} {v:.4f}" for k, v in floor.items()), flush=True)
    params = {
        "hidden": args.hidden,
        "max_len": args.max_len,
        "blocks": 1,
        "heads": 1,
        "ffn": 2,
        "dropout": 0.2,
        "attn_dropout": 0.2,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "holdout": False,
        "threads": 2,
    }

    def show(r: EpochReport) -> None:
        print(f"  epoch {r.epoch}  loss {r.loss:.4f}  {r.seconds:.0f}s", flush=True)

    runs = []
    for text in args.eps:
        eps = math.inf if text == "inf" else float(text)
        cfg = DPConfig(epsilon=eps, epochs=args.epochs, max_grad_norm=args.max_grad_norm)
        print(f"epsilon {text}", flush=True)
        t0, c0 = time.perf_counter(), time.process_time()
        model = SASRec(**params, dp=cfg).fit(task.train, progress=show)
        train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        test = score(model)
        report = model.dp_report_
        assert report is not None
        print("  " + "  ".join(f"{k} {v:.4f}" for k, v in test.items()), flush=True)
        print(f"  spent epsilon {report.epsilon}  sigma {report.noise_multiplier:.3f}")
        runs.append(
            {
                "target_epsilon": None if math.isinf(eps) else eps,
                "report": report.to_json(),
                "test": test,
                "train_s": round(train_s, 1),
                "train_cpu_s": round(cpu_s, 1),
                "loss_by_epoch": [r.loss for r in model.history_],
            }
        )
    result = {
        "benchmark": "Q3 under DP-SGD",
        "dataset": source,
        "model": "sasrec (DP network variant, no attributes)",
        "training_customers": len(task.train.users),
        "test_customers": n_users,
        "items": task.n_items,
        "params": params,
        "epochs": args.epochs,
        "max_grad_norm": args.max_grad_norm,
        "popularity": floor,
        "runs": runs,
        "machine": {
            "hardware": hardware(),
            "platform": platform.platform(),
            "loadavg_1m_end": os.getloadavg()[0],
        },
        "command": " ".join(["python", "bench/bench_dp_q3.py", *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
