"""Q2 (BENCHMARKS.md) VALIDATION runs of ``seqrank`` on the REAL Amazon Beauty data.

How the settings of ``seqrank`` were chosen, without the test item: the model is fitted
on every user's sequence without its last two items (``leave_one_out``'s training part)
and ranks the second-to-last item (the validation item) among ALL items, the user's
earlier items excluded — the validation task of ``shopcast evaluate q2`` with every
user instead of its 10,000-user sample. The test item is never read.

Prints validation HR@10 / NDCG@10 / NDCG@20 and the fit's CPU and wall seconds (on a
busy machine the CPU seconds of this one-thread run are the time it takes alone).
Usage: ``python bench/bench_q2_seqrank_validation.py [--users N] [--set n_windows=2 ...]``
(values are JSON: ``--set n_candidates=100``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

from shopcast.evaluation import splits as S
from shopcast.evaluation.benchmarks import _q2_events
from shopcast.evaluation.harness import evaluate_ranking, ranking_task, sample_users
from shopcast.models.sasrec import ItemAttributes
from shopcast.models.seqrank import SequenceRanker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="amazon-beauty folder")
    ap.add_argument("--users", type=int, default=0, help="a seeded sample of N users (0: all)")
    ap.add_argument("--set", nargs="*", default=[], help="key=JSON value for SequenceRanker")
    ap.add_argument("--no-attributes", action="store_true", help="leave item attributes out")
    args = ap.parse_args()
    data = args.data or Path(os.environ.get("SHOPCAST_DATA", "../shared/datasets")) / (
        "amazon-beauty"
    )
    params: dict[str, Any] = {}
    for kv in args.set:
        key, _, value = kv.partition("=")
        params[key] = json.loads(value)
    frame, side, source = _q2_events(data)
    loo = S.leave_one_out(frame)
    task = ranking_task(loo.train, loo.validation)  # the test item is not read
    if args.users:
        task = sample_users(task, args.users)
    attributes = None if args.no_attributes else ItemAttributes.from_items(side.items)
    model = SequenceRanker(attributes=attributes, **params)
    c0, w0 = time.process_time(), time.perf_counter()
    model.fit(task.train)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    r = evaluate_ranking(model, task, (10, 20), metrics=("HR", "NDCG"))
    out = {
        "source": source,
        "params": params,
        "attributes": attributes is not None,
        "users": len(task.contexts),
        "validation": {k: round(v, 4) for k, v in r.items() if k.startswith(("HR", "NDCG"))},
        "fit_cpu_s": round(cpu, 1),
        "fit_wall_s": round(wall, 1),
        "score_wall_s": round(r["score_s"], 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_avg": os.getloadavg(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
