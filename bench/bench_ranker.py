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

Also measured: the feature builder per request (p50/p99 ms, pool size), the ranker's
predict per request and, with ``--latency`` (Online Retail), ``Engine.recommend``
in process with and without the ranker, requests alternating, same engine. Prints a
table and writes bench/results/ranker.json.
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
from shopcast.serving.ranker import LearnedRanker
from shopcast.storage import open_store
from shopcast.training import ranker_data as RD

ROOT = Path(__file__).resolve().parent.parent
GROUPS = (3000, 1000, 2000)
#: Cut points per shopper: more where shoppers are few (Taobao sample: 814 users).
CUTS_PER_SUBJECT = {"taobao": 6}


def bootstrap_gain(
    ranker: np.ndarray, base: np.ndarray, n: int = 2000, seed: int = 0
) -> list[float] | None:
    """95 % interval of mean(ranker) / mean(base) - 1, paired bootstrap over groups."""
    if base.size == 0 or base.mean() <= 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(base.size, size=(n, base.size))
    a, b = ranker[idx].mean(axis=1), base[idx].mean(axis=1)
    gains = a[b > 0] / b[b > 0] - 1.0
    lo, hi = np.quantile(gains, [0.025, 0.975])
    return [round(float(lo), 4), round(float(hi), 4)]


def _ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    qs = np.quantile(np.asarray(values), [0.5, 0.99])
    return {"p50_ms": round(float(qs[0]), 3), "p99_ms": round(float(qs[1]), 3)}


def run(
    name: str, data_path: Path | None, groups: tuple[int, int, int], latency_n: int = 0
) -> dict[str, Any]:
    store = open_store("memory://")
    started = time.perf_counter()
    import_dataset(store, name, data_path=data_path)
    frame = store.events.frame()
    items, users = list(store.items.scan()), list(store.users.scan())
    import_s = time.perf_counter() - started
    split = RD.SplitConfig(max_groups=groups, cuts_per_subject=CUTS_PER_SUBJECT.get(name, 2))
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
    per_group = RD.ndcg_per_group(test, data.columns, data.sources, ranker)
    best = RD.summary(metrics)["best_source"]
    interval = {
        "ranker_vs_blend": bootstrap_gain(per_group["ranker"], per_group["blend"]),
        "ranker_vs_best_source": bootstrap_gain(per_group["ranker"], per_group[best]),
    }
    predict_ms = []
    off = test.offsets
    for g in range(min(len(test), 500)):
        x = test.x[off[g] : off[g + 1]]
        t = time.perf_counter()
        ranker.predict(x)
        predict_ms.append((time.perf_counter() - t) * 1000)
    serving = latency(name, data_path, ranker, latency_n) if latency_n else None
    return {
        "dataset": name,
        "latency": serving,
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
        "ndcg_gain_95ci": interval,
        "predict_per_request": _ms(predict_ms),
        "importance_top10": dict(list(ranker.importance().items())[:10]),
    }


def latency(name: str, data_path: Path | None, ranker: LearnedRanker, n: int) -> dict[str, Any]:
    """In-process ``Engine.recommend`` (home, k=10) with and without the ranker."""
    from shopcast.config import RecommendSettings
    from shopcast.serving.engine import Engine
    from shopcast.serving.pipeline import RecommendRequest
    from shopcast.training.bundle import train_bundle

    store = open_store("memory://")
    import_dataset(store, name, data_path=data_path)
    cfg = RecommendSettings(log_impressions=False)
    settings = Settings(database_url="memory://", recommend=cfg)
    bundle = train_bundle(store, cfg, ranker=False)
    bundle.models["ranker"] = ranker
    last = float(store.events.frame()["ts"].max())
    engine = Engine(store, settings, bundle, clock=lambda: last + 3600.0)
    stage = engine.pipeline.ranker
    assert stage is not None
    users = sorted(u.user_id for u in store.users.scan())
    rng = np.random.default_rng(0)
    picks = [users[int(i)] for i in rng.integers(len(users), size=n)]
    times: dict[str, list[float]] = {"blend": [], "ranker": []}
    cpu: dict[str, list[float]] = {"blend": [], "ranker": []}
    parts: dict[str, list[float]] = {"features": [], "predict": []}
    build, predict = stage.features.build, stage.ranker.predict

    def timed_build(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = build(*args, **kwargs)
        parts["features"].append((time.perf_counter() - t) * 1000)
        return out

    def timed_predict(x: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        out = predict(x)
        parts["predict"].append((time.perf_counter() - t) * 1000)
        return out

    stage.features.build = timed_build  # type: ignore[method-assign]
    stage.ranker.predict = timed_predict  # type: ignore[method-assign]
    for i, user in enumerate(picks * 2):
        arm = "ranker" if i % 2 else "blend"
        engine.pipeline.ranker = stage if arm == "ranker" else None
        t, c = time.perf_counter(), time.thread_time()
        rec = engine.recommend(RecommendRequest(user_id=user, k=10))
        if i >= 100:  # warm-up
            times[arm].append((time.perf_counter() - t) * 1000)
            cpu[arm].append((time.thread_time() - c) * 1000)
        assert not rec.degraded
    return {
        "requests_per_arm": len(times["blend"]),
        "recommend_blend": _ms(times["blend"]),
        "recommend_ranker": _ms(times["ranker"]),
        "recommend_cpu_blend": _ms(cpu["blend"]),
        "recommend_cpu_ranker": _ms(cpu["ranker"]),
        "ranker_features": _ms(parts["features"]),
        "ranker_predict": _ms(parts["predict"]),
        "method": "in-process Engine.recommend(home, k=10), arms alternating, same engine; "
        "cpu = the request thread's CPU time (robust to other processes' load)",
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines.append(
            f"\n{r['dataset']}: {r['data']['test']['groups']} test groups "
            f"(best source {r['best_source']}; ranker NDCG@10 gain vs it "
            f"{100 * (r.get('gain_vs_best_source') or 0):+.1f} %, vs blend "
            f"{100 * (r.get('gain_vs_blend') or 0):+.1f} %; 95 % CI vs blend "
            f"{r['ndcg_gain_95ci']['ranker_vs_blend']})"
        )
        lines.append(f"  {'method':<18}{'NDCG@10':>9}{'HR@10':>9}{'Recall@10':>11}")
        for method, m in r["test"].items():
            lines.append(
                f"  {method:<18}{m['ndcg@10']:>9.4f}{m['hr@10']:>9.4f}{m['recall@10']:>11.4f}"
            )
        if r.get("latency"):
            lat = r["latency"]
            lines.append(
                f"  recommend wall ms: blend {lat['recommend_blend']}, ranker "
                f"{lat['recommend_ranker']}; request-thread CPU ms: blend "
                f"{lat['recommend_cpu_blend']}, ranker {lat['recommend_cpu_ranker']} "
                f"(features {lat['ranker_features']}, predict {lat['ranker_predict']})"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="online-retail,rees46,taobao")
    parser.add_argument("--data", type=Path, default=None, help="datasets root (SHOPCAST_DATA)")
    parser.add_argument(
        "--groups", default=None, help="train,valid,test caps (e.g. 3000,1000,2000)"
    )
    parser.add_argument(
        "--latency", type=int, default=2000, help="requests per arm on online-retail (0: none)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ranker.json")
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    results = []
    for name in args.datasets.split(","):
        caps = GROUPS
        if args.groups:
            a, b, c = (int(v) for v in args.groups.split(","))
            caps = (a, b, c)
        print(f"== {name}", file=sys.stderr)
        n = args.latency if name == "online-retail" else 0
        results.append(run(name, args.data, caps, n))
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
