"""Learned ranker vs. every single candidate source and the hand-tuned blend (real data).

For each dataset (Online Retail, REES46 sample, Taobao sample; read from SHOPCAST_DATA
through ``shopcast.ingest.datasets``, never copied), imported into an in-memory store:

1. ``training.ranker_data.build_dataset``: temporal split at event quantiles 50/70/85 %
   (candidate bundle fitted on the first half only), cut points sampled per shopper,
   the serving pipeline's own context / candidates / blend / rules at each cut, graded
   labels = the shopper's next 10 item events within 24 h (next new item or re-buy);
2. LightGBM LambdaRank on the train window, early stopping on the valid window;
3. on the test window, NDCG@10 / HR@10 / Recall@10 of each source alone (its own
   list after the rules), the blend and the ranker, overall and per scene.

Also measured: the feature builder per request (p50/p99 ms, pool size) and the
ranker's predict per request. Prints a table and writes bench/results/ranker.json.
Machine: whatever runs it (figures in docs/benchmarks.md: 2 shared CPU cores).

    .venv/bin/python bench/bench_ranker.py [--datasets online-retail,rees46,taobao]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from shopcast.config import Settings
from shopcast.evaluation.benchmarks import hardware
from shopcast.ingest.importer import import_dataset
from shopcast.storage import open_store
from shopcast.training import ranker_data as RD

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GROUPS = {"online-retail": (3000, 1000, 2000), "rees46": (3000, 1000, 2000)}
DEFAULT_GROUPS["taobao"] = (3000, 1000, 2000)


def _ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    qs = np.quantile(np.asarray(values), [0.5, 0.99])
    return {"p50_ms": round(float(qs[0]), 3), "p99_ms": round(float(qs[1]), 3)}


def run(name: str, data_path: Path | None, groups: tuple[int, int, int]) -> dict[str, Any]:
    store = open_store("memory://")
    started = time.perf_counter()
    import_dataset(store, name, data_path=data_path)
    frame = store.events.frame()
    items, users = list(store.items.scan()), list(store.users.scan())
    import_s = time.perf_counter() - started
    split = RD.SplitConfig(max_groups=groups)
    data = RD.build_dataset(frame, items, users, Settings(), split, progress=print)
    started = time.perf_counter()
    ranker = RD.train_ranker(data)
    fit_s = time.perf_counter() - started
    test = data.windows["test"]
    metrics = RD.evaluate(test, data.columns, data.sources, ranker)
    scenes = {
        scene: RD.evaluate(RD.by_scene(test, scene), data.columns, data.sources, ranker)
        for scene in data.scenes
    }
    predict_ms = []
    off = test.offsets
    for g in range(min(len(test), 500)):
        x = test.x[off[g] : off[g + 1]]
        t = time.perf_counter()
        ranker.predict(x)
        predict_ms.append((time.perf_counter() - t) * 1000)
    return {
        "dataset": name,
        "events": frame.height,
        "items": len(items),
        "import_s": round(import_s, 1),
        "data": data.stats,
        "fit_s": round(fit_s, 1),
        "trees": ranker.metrics_["trees"],
        "test": metrics,
        "test_by_scene": scenes,
        "test_groups_by_scene": {s: RD.by_scene(test, s).sizes.shape[0] for s in data.scenes},
        **RD.summary(metrics),
        "predict_per_request": _ms(predict_ms),
        "importance_top10": dict(list(ranker.importance().items())[:10]),
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines.append(
            f"\n{r['dataset']}: {r['data']['test']['groups']} test groups "
            f"(best source {r['best_source']}; ranker NDCG@10 gain vs it "
            f"{100 * (r.get('gain_vs_best_source') or 0):+.1f} %, vs blend "
            f"{100 * (r.get('gain_vs_blend') or 0):+.1f} %)"
        )
        lines.append(f"  {'method':<18}{'NDCG@10':>9}{'HR@10':>9}{'Recall@10':>11}")
        for method, m in r["test"].items():
            lines.append(
                f"  {method:<18}{m['ndcg@10']:>9.4f}{m['hr@10']:>9.4f}{m['recall@10']:>11.4f}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="online-retail,rees46,taobao")
    parser.add_argument("--data", type=Path, default=None, help="datasets root (SHOPCAST_DATA)")
    parser.add_argument(
        "--groups", default=None, help="train,valid,test caps (e.g. 3000,1000,2000)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ranker.json")
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    results = []
    for name in args.datasets.split(","):
        caps = DEFAULT_GROUPS.get(name, (3000, 1000, 2000))
        if args.groups:
            a, b, c = (int(v) for v in args.groups.split(","))
            caps = (a, b, c)
        print(f"== {name}", file=sys.stderr)
        results.append(run(name, args.data, caps))
    report = {
        "machine": hardware(),
        "command": " ".join(["python", *sys.argv]),
        "protocol": RD.__doc__,
        "results": results,
        "median_gain_vs_best_source": statistics.median(
            r.get("gain_vs_best_source") or 0.0 for r in results
        ),
    }
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
