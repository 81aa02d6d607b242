"""Recommendation pipeline CPU per request, by stage, in process (thread CPU time).

Opens a demo store (`shopcast demo --once --data-dir DIR`: UCI Online Retail with the
trained bundle and its learned ranker) as `shopcast serve` would (``Engine.open``,
impressions not logged so the store is only read), then answers ``--requests`` home
recommendations (k=10) for customers drawn at random, after ``--warmup`` requests.

Each stage is timed with ``time.thread_time`` of the requesting thread (the CPU the
request itself spends, little disturbed by other processes' load on a shared machine):
context, candidates (and each source), rank (features, predict), the rules, rerank,
placements, explain, and ``Engine.recommend`` as a whole.

With the result cache on (``--cache``), a first pass asks for distinct customers (all
misses), a second for the same customers again (all hits): both are reported.

    nice -n 10 .venv/bin/python bench/bench_pipeline_cpu.py --data-dir DIR \
        [--requests 1500] [--cache] [--no-compiled-ranker]

Prints a table (mean thread-CPU ms per request) and writes
bench/results/pipeline_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


class Timer:
    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[name] += time.thread_time() - started
                self.calls[name] += 1

        return timed

    def reset(self) -> None:
        self.cpu.clear()
        self.calls.clear()

    def per_request(self, n: int) -> dict[str, float]:
        return {k: round(v * 1000 / n, 4) for k, v in sorted(self.cpu.items())}


def instrument(engine: Any, timer: Timer, per_rule: bool) -> None:
    pipe = engine.pipeline
    stages = ["context", "candidates", "rank", "explain"]
    from shopcast.serving.rerank import MMR

    MMR.__call__ = timer.wrap("rerank", MMR.__call__)  # type: ignore[method-assign]
    stages += [s for s in ("ranked", "apply_rules") if hasattr(pipe, s)]
    for stage in stages:
        setattr(pipe, stage, timer.wrap(stage, getattr(pipe, stage)))
    for name, source in list(pipe.sources.items()):
        pipe.sources[name] = _Named(name, timer.wrap(f"  source {name}", source), source)
    if per_rule:  # wrapped rules are not the cache's known ones: the cache stays off
        pipe.rules = [timer.wrap(f"  rule {type(r).__name__}", r) for r in pipe.rules]
    pipe.placements = [timer.wrap(f"  placement {type(p).__name__}", p) for p in pipe.placements]
    if pipe.ranker is not None:
        features = pipe.ranker.features
        features.build = timer.wrap("  rank: features", features.build)
        learned = pipe.ranker.ranker
        learned.predict = timer.wrap("  rank: predict", learned.predict)


class _Named:
    """A wrapped source keeping the attributes the pipeline reads (``heavy``)."""

    def __init__(self, name: str, fn: Callable[..., Any], source: Any) -> None:
        self.name = name
        self._fn = fn
        self.heavy = getattr(source, "heavy", False)

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--cache", action="store_true", help="result cache on")
    parser.add_argument("--no-compiled-ranker", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "pipeline_cpu.json"
    )
    args = parser.parse_args()

    import polars as pl

    from shopcast.config import RecommendSettings, Settings
    from shopcast.serving import ranker as ranker_mod
    from shopcast.serving.engine import Engine
    from shopcast.serving.pipeline import RecommendRequest
    from shopcast.storage import open_store

    if args.no_compiled_ranker:
        ranker_mod.COMPILE = False
    db = f"sqlite:///{args.data_dir / 'shopcast.db'}"
    store = open_store(db)
    extra: dict[str, Any] = {}
    if "result_cache" in RecommendSettings.model_fields:
        extra["result_cache"] = args.cache
    settings = Settings(
        database_url=db,
        model_dir=args.data_dir / "models",
        recommend=RecommendSettings(log_impressions=False, **extra),
    )
    started = time.perf_counter()
    engine = Engine.open(store, settings)
    open_s = time.perf_counter() - started
    customers = (
        store.events.frame()
        .filter(pl.col("user_id").is_not_null())["user_id"]
        .unique()
        .sort()
        .to_list()
    )
    rng = np.random.default_rng(0)
    timer = Timer()
    instrument(engine, timer, per_rule=not args.cache)
    stage = engine.pipeline.ranker
    fast = getattr(stage.ranker, "fast_", None) if stage is not None else None

    def run(users: list[str]) -> tuple[dict[str, float], float]:
        timer.reset()
        total = 0.0
        for user in users:
            t = time.thread_time()
            rec = engine.recommend(RecommendRequest(user_id=user, k=10))
            total += time.thread_time() - t
            assert not rec.degraded, rec.degraded
        return timer.per_request(len(users)), round(total * 1000 / len(users), 4)

    warm = [customers[int(i)] for i in rng.integers(len(customers), size=args.warmup)]
    run(warm)
    if args.cache:
        engine.pipeline.cache.clear()  # type: ignore[attr-defined]
        picks = [str(u) for u in rng.permutation(customers)[: args.requests]]
        miss_stages, miss_total = run(picks)
        hit_stages, hit_total = run(picks)
        phases = {
            "miss (first request of a customer)": (miss_stages, miss_total),
            "hit (same customer again)": (hit_stages, hit_total),
        }
    else:
        picks = [customers[int(i)] for i in rng.integers(len(customers), size=args.requests)]
        phases = {"no cache": run(picks)}
    names = sorted({k for stages, _ in phases.values() for k in stages}, key=_order)
    header = f"{'stage (thread CPU ms / request)':<38}" + "".join(f"{p[:22]:>24}" for p in phases)
    print(header)
    for name in names:
        print(f"{name:<38}" + "".join(f"{s.get(name, 0.0):>24.3f}" for s, _ in phases.values()))
    print(f"{'Engine.recommend':<38}" + "".join(f"{t:>24.3f}" for _, t in phases.values()))
    result = {
        "data_dir": str(args.data_dir),
        "customers": len(customers),
        "requests": len(picks),
        "engine_open_s": round(open_s, 1),
        "compiled_ranker": fast is not None,
        "cache": args.cache,
        "phases": {p: {"stages": s, "recommend": t} for p, (s, t) in phases.items()},
        "load_avg": os.getloadavg(),
        "method": "in-process Engine.recommend(home, k=10), impressions off; "
        "time.thread_time of the requesting thread, mean per request",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average {os.getloadavg()}; compiled ranker: {fast is not None}")


def _order(name: str) -> tuple[int, str]:
    top = ["context", "ranked", "candidates", "rank", "rule", "rerank", "placement", "explain"]
    for i, t in enumerate(top):
        if t in name:
            return (i, name)
    return (len(top), name)


if __name__ == "__main__":
    main()
