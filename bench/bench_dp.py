"""Utility cost of differential privacy: Q2 (Amazon Beauty, S3-Rec release) for SASRec
trained with DP-SGD (``shopcast.privacy.dp``) at ε ∈ {1, 4, 8, ∞}.

Protocol (as bench_q2_sasrec.py, whose data loading and evaluation are reused): per
user, the last item is the test item; the model trains on everything before it (the
validation item included, no early stopping: DP training runs a fixed number of epochs);
the test item is ranked against ALL items, the user's earlier items excluded; HR@10,
NDCG@10 (and @20). ε = ∞ is the same network, optimizer, batch size and epochs without
clipping or noise. δ = 1 / training users; unit of privacy: one user's sequence.

The training budget is fixed and small (a 2-core shared machine): every user trains,
but with few epochs and a small network (``--epochs``, ``--hidden``, ``--max-len``);
``--users N`` trains and evaluates on a seeded sample of N users. Item attributes are
not used (the DP network variant does not support them).

Writes ``bench/results/dp.json`` (``--out``).
Usage: ``python bench/bench_dp.py [--epochs 3] [--eps 1 4 8 inf]``.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_q2_sasrec import evaluate, interactions, sequences

from shopcast.config import default_data_path
from shopcast.ingest.datasets import load_dataset
from shopcast.models import Vocabulary
from shopcast.models.sasrec import EpochReport, SASRec
from shopcast.privacy.dp import DPConfig

RESULTS = Path(__file__).parent / "results" / "dp.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_path())
    parser.add_argument("--users", type=int, default=None, help="seeded user sample")
    parser.add_argument("--eps", nargs="*", default=["1", "4", "8", "inf"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    frames = load_dataset("amazon-s3rec", data_path=args.data)
    users, seqs = sequences(frames.events)
    if args.users is not None and args.users < len(users):
        pick = np.sort(np.random.default_rng(0).choice(len(users), args.users, replace=False))
        users, seqs = [users[i] for i in pick], [seqs[i] for i in pick]
    items = Vocabulary(dict.fromkeys(i for s in seqs for i in s))
    data = interactions(users, seqs, items, drop_last=1)
    idx = [np.asarray([items.index(i) for i in s], dtype=np.int64) for s in seqs]
    inputs, targets = [s[:-1] for s in idx], np.array([s[-1] for s in idx])
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
        model = SASRec(**params, dp=cfg).fit(data, progress=show)
        train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        test = evaluate(model, inputs, targets, len(items))
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
        "benchmark": "Q2 under DP-SGD",
        "dataset": "amazon-beauty (S3-Rec)",
        "model": "sasrec (DP network variant, no attributes)",
        "users": len(users),
        "items": len(items),
        "params": params,
        "epochs": args.epochs,
        "max_grad_norm": args.max_grad_norm,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
