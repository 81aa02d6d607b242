"""Utility cost of differential privacy: a model trained with DP-SGD at ε ∈ {1, 4, 8, ∞}
on Q2, Q3 or Q1 (``--bench``), SASRec or the hybrid two-tower model (``--model``).

- ``--bench q2`` (Amazon Beauty, S3-Rec release; data loading and evaluation of
  bench_q2_sasrec.py): per user, the last item is the test item; the model trains on
  everything before it (no early stopping: DP training runs a fixed number of epochs);
  the test item is ranked against ALL items, the user's earlier items excluded; HR@10,
  NDCG@10 (and @20). ``--users N`` trains and evaluates on a seeded sample of N users.
- ``--bench q3`` (UCI Online Retail, next-month purchases): Q3 exactly as ``shopcast
  evaluate q3`` builds it (``evaluation.benchmarks``: same cleaning, cutoff 2011-11-01,
  the customer's training items excluded, full ranking, Recall@K with denominator
  min(K, |test|), NDCG@K, same metric code); the model trains on the training
  purchases only. Popularity (not private) is printed as the reference.
- ``--bench q1`` (MovieLens 100K, fold u1; hybrid rating head only): RMSE/MAE on
  u1.test, predictions clipped to the training range; the global mean's RMSE is the
  reference.

``--model sasrec``: ``shopcast.privacy.dp`` (no item attributes). ``--model hybrid``:
``shopcast.privacy.dp_hybrid`` (``HybridRanker`` for Q2/Q3, ``HybridRating`` for Q1;
side features of ``bench_hybrid.py``: Q3 item descriptions/prices and customers'
countries, Q1 users' age/gender/occupation/zip and films' genres/year/title). ε = ∞ is
the same network, optimizer, batch size, epochs and seed without clipping or noise.
δ = 1 / training users; the unit of privacy is one user.

The budget is fixed and small (a 2-core shared machine): few epochs, small networks.
Writes ``bench/results/dp.json`` (Q2 SASRec), ``dp_q3.json`` (Q3 SASRec) or
``dp_<bench>_<model>.json`` (``--out``).
Usage: ``python bench/bench_dp.py [--bench q3] [--model hybrid] [--epochs 4]
[--eps 1 4 8 inf]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shopcast.config import default_data_path
from shopcast.evaluation.benchmarks import hardware
from shopcast.privacy.dp import DPConfig

RESULTS = Path(__file__).parent / "results"
KS = (10, 20)
METRICS = ("Recall", "NDCG", "HR")


@dataclass
class Bench:
    """A benchmark's training data, scorer, description and reference figures."""

    name: str
    dataset: str
    train: Any
    score: Callable[[Any], dict[str, float]]
    sizes: dict[str, int]
    side: Any = None
    reference: dict[str, dict[str, float]] = field(default_factory=dict)


def q2(args: argparse.Namespace) -> Bench:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_q2_sasrec import evaluate, interactions, sequences

    from shopcast.ingest.datasets import load_dataset
    from shopcast.models import Vocabulary

    frames = load_dataset("amazon-s3rec", data_path=args.data)
    users, seqs = sequences(frames.events)
    if args.users is not None and args.users < len(users):
        pick = np.sort(np.random.default_rng(0).choice(len(users), args.users, replace=False))
        users, seqs = [users[i] for i in pick], [seqs[i] for i in pick]
    items = Vocabulary(dict.fromkeys(i for s in seqs for i in s))
    data = interactions(users, seqs, items, drop_last=1)
    idx = [np.asarray([items.index(i) for i in s], dtype=np.int64) for s in seqs]
    inputs, targets = [s[:-1] for s in idx], np.array([s[-1] for s in idx])

    def score(model: Any) -> dict[str, float]:
        return dict(evaluate(model, inputs, targets, len(items)))

    return Bench(
        "Q2 under DP-SGD",
        "amazon-beauty (S3-Rec)",
        data,
        score,
        {"users": len(users), "items": len(items)},
    )


def q3(args: argparse.Namespace) -> Bench:
    from shopcast.evaluation import splits as S
    from shopcast.evaluation.benchmarks import Q3_CUTOFF, _q3_events
    from shopcast.evaluation.harness import evaluate_ranking, ranking_task
    from shopcast.models import Popularity

    path = args.data / "uci-online-retail" if args.data.name != "uci-online-retail" else args.data
    frame, _side, source = _q3_events(path)
    cutoff = S.to_epoch(Q3_CUTOFF)
    split = S.temporal_split(frame, cutoff)
    task = ranking_task(split.train, split.test, now=cutoff)

    def score(model: Any) -> dict[str, float]:
        out = evaluate_ranking(model, task, KS, capped_recall=True, metrics=METRICS)
        return {k: round(float(v), 4) for k, v in out.items() if "@" in k}

    side = None
    if args.model == "hybrid":
        from shopcast.ingest.datasets import load_online_retail
        from shopcast.models.hybrid import SideFeatures

        frames = load_online_retail(path)
        side = SideFeatures.from_records(frames.items, frames.users)
    bench = Bench(
        "Q3 under DP-SGD",
        source,
        task.train,
        score,
        {
            "training_customers": len(task.train.users),
            "test_customers": int(task.relevant.shape[0]),
            "items": task.n_items,
        },
        side,
    )
    bench.reference["popularity (not private)"] = score(Popularity().fit(task.train))
    return bench


def q1(args: argparse.Namespace) -> Bench:
    from shopcast.evaluation import metrics as M
    from shopcast.evaluation import splits as S
    from shopcast.evaluation.harness import rating_task
    from shopcast.ingest.datasets import load_movielens_100k
    from shopcast.models.hybrid import SideFeatures

    if args.model != "hybrid":
        raise SystemExit("--bench q1 needs --model hybrid (the rating head)")
    folder = args.data / "movielens-100k" if args.data.name != "movielens-100k" else args.data
    frames = load_movielens_100k(folder)
    task = rating_task(*_fold(S, folder))

    def score(model: Any) -> dict[str, float]:
        pred = model.predict(task.user, task.item)
        return {
            "RMSE": round(M.rmse(task.rating, pred), 4),
            "MAE": round(M.mae(task.rating, pred), 4),
        }

    mean = np.full(task.rating.shape, float(np.nanmean(task.train.value)))
    bench = Bench(
        "Q1 under DP-SGD",
        f"MovieLens 100K u1 at {folder}",
        task.train,
        score,
        {"training_users": len(task.train.users), "test_ratings": int(task.rating.shape[0])},
        SideFeatures.from_records(frames.items, frames.users),
    )
    bench.reference["global mean (not private)"] = {
        "RMSE": round(M.rmse(task.rating, mean), 4),
        "MAE": round(M.mae(task.rating, mean), 4),
    }
    return bench


def _fold(S: Any, folder: Path) -> tuple[Any, Any]:
    fold = S.read_movielens_fold(folder, 1)
    return fold.train, fold.test


def build(args: argparse.Namespace, cfg: DPConfig) -> tuple[Any, dict[str, Any]]:
    """A fresh model with DP settings ``cfg`` and the parameters recorded."""
    if args.model == "sasrec":
        from shopcast.models.sasrec import SASRec

        params: dict[str, Any] = {
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
        return SASRec(**params, dp=cfg), params
    from shopcast.models.hybrid import HybridRanker, HybridRating

    params = {
        "hidden": args.hidden,
        "dim": args.dim,
        "dropout": 0.1,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": 0,
        "threads": 2,
    }
    if args.bench == "q1":
        return HybridRating(**params, dp=cfg), params
    params["negatives"] = args.negatives
    return HybridRanker(**params, dp=cfg), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", choices=("q2", "q3", "q1"), default="q2")
    parser.add_argument("--model", choices=("sasrec", "hybrid"), default="sasrec")
    parser.add_argument("--data", type=Path, default=default_data_path())
    parser.add_argument("--users", type=int, default=None, help="q2: seeded user sample")
    parser.add_argument("--eps", nargs="*", default=["1", "4", "8", "inf"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=20, help="sasrec")
    parser.add_argument("--dim", type=int, default=32, help="hybrid")
    parser.add_argument("--negatives", type=int, default=32, help="hybrid ranker")
    parser.add_argument("--per-user", type=int, default=8, help="hybrid: draws per user")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.batch_size is None:
        args.batch_size = 512 if args.bench == "q2" else 256
    if args.out is None:
        legacy = {("q2", "sasrec"): "dp.json", ("q3", "sasrec"): "dp_q3.json"}
        name = legacy.get((args.bench, args.model), f"dp_{args.bench}_{args.model}.json")
        args.out = RESULTS / name

    bench = {"q1": q1, "q2": q2, "q3": q3}[args.bench](args)
    print(f"{bench.dataset}: {bench.sizes}", flush=True)
    for label, figures in bench.reference.items():
        print(f"{label}  " + "  ".join(f"{k} {v:.4f}" for k, v in figures.items()), flush=True)

    def show(r: Any) -> None:
        print(f"  epoch {r.epoch}  loss {r.loss:.4f}  {r.seconds:.0f}s", flush=True)

    runs = []
    params: dict[str, Any] = {}
    for text in args.eps:
        eps = math.inf if text == "inf" else float(text)
        cfg = DPConfig(
            epsilon=eps,
            epochs=args.epochs,
            max_grad_norm=args.max_grad_norm,
            per_user=args.per_user,
        )
        model, params = build(args, cfg)
        print(f"epsilon {text}", flush=True)
        t0, c0 = time.perf_counter(), time.process_time()
        if bench.side is not None:
            model.fit(bench.train, side=bench.side, progress=show)
        else:
            model.fit(bench.train, progress=show)
        train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        test = bench.score(model)
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
                "loadavg_1m_after": os.getloadavg()[0],
            }
        )
    model_name = {
        "sasrec": "sasrec (DP network variant, no attributes)",
        "hybrid": "hybrid two-tower (DP per-user examples, shopcast.privacy.dp_hybrid)",
    }[args.model]
    result = {
        "benchmark": bench.name,
        "dataset": bench.dataset,
        "model": model_name,
        **bench.sizes,
        "params": params,
        "epochs": args.epochs,
        "max_grad_norm": args.max_grad_norm,
        "per_user": args.per_user if args.model == "hybrid" else None,
        "reference": bench.reference,
        "runs": runs,
        "machine": {
            "hardware": hardware(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_1m_end": os.getloadavg()[0],
        },
        "command": " ".join(["python", "bench/bench_dp.py", *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
