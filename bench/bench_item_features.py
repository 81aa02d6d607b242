"""Item features on the REAL Online Retail and REES46 catalogs (+ one SYNTHETIC scale-up).

For each catalog: ``ItemFeatures`` fit and transform, TF-IDF + ``ContentSimilarity``
fit, content-neighbour query latency (k=10, random items), and the cost of indexing
one new item live (``LiveItemFeatures.upsert`` without refit). The scale-up repeats
the Online Retail titles ``--scale`` times with a numeric suffix (synthetic) to show
how the query, linear in the catalog, grows. ``--minilm`` also times the sentence
embedding backend (needs the extra ``text``; CPU).

Run: ``.venv/bin/python bench/bench_item_features.py [--scale 25] [--minilm]``; prints
the figures and writes them to ``bench/results/item_features.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from shopcast.domain import Item
from shopcast.features import ContentSimilarity, ItemFeatures, LiveItemFeatures
from shopcast.ingest.datasets import load_dataset

RESULTS = Path(__file__).parent / "results" / "item_features.json"


def seconds(fn: Callable[[], object], repeat: int = 3) -> float:
    """Median wall-clock seconds of ``repeat`` calls."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return statistics.median(out)


def query_ms(sim: ContentSimilarity, ids: list[str], n: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    lat = []
    for i in rng.choice(len(ids), size=min(n, len(ids)), replace=False):
        start = time.perf_counter()
        sim.neighbors(ids[int(i)], 10)
        lat.append((time.perf_counter() - start) * 1000)
    arr = np.array(lat)
    return {
        "query_ms_median": round(float(np.median(arr)), 3),
        "query_ms_p95": round(float(np.percentile(arr, 95)), 3),
    }


def bench_catalog(items: list[Item], queries: int, repeat: int) -> dict[str, object]:
    features = ItemFeatures().fit(items)
    sim = ContentSimilarity().fit(items)
    live = LiveItemFeatures(refit_growth=10.0).rebuild(items)  # no refit during the probe
    probes = [
        Item(item_id=f"new-{i}", title=f"{items[i].title or ''} new", category=items[i].category)
        for i in range(50)
    ]
    start = time.perf_counter()
    for probe in probes:
        live.upsert([probe])
    upsert_ms = (time.perf_counter() - start) * 1000 / len(probes)
    terms = len(getattr(sim.encoder_, "vocabulary_", {}))
    return {
        "items": len(items),
        "item_features_fit_s": round(seconds(lambda: ItemFeatures().fit(items), repeat), 4),
        "item_features_transform_s": round(seconds(lambda: features.transform(items), repeat), 4),
        "content_fit_s": round(seconds(lambda: ContentSimilarity().fit(items), repeat), 4),
        "tfidf_terms": terms,
        **query_ms(sim, [i.item_id for i in items], queries),
        "live_upsert_one_ms": round(upsert_ms, 3),
        "report": features.report(),
    }


def scaled(items: list[Item], times: int) -> list[Item]:
    """SYNTHETIC: the titles repeated ``times`` times with a numeric suffix."""
    return [
        Item(item_id=f"{i.item_id}-{k}", title=f"{i.title or ''} {k}", price=i.price)
        for k in range(times)
        for i in items
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=int, default=25, help="synthetic scale-up factor")
    parser.add_argument("--minilm", action="store_true", help="also time sentence embeddings")
    args = parser.parse_args()

    retail = load_dataset("online-retail").items
    rees46 = load_dataset("rees46").items
    results: dict[str, object] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "online_retail": bench_catalog(retail, args.queries, args.repeat),
        "rees46": bench_catalog(rees46, args.queries, args.repeat),
    }
    big = scaled(retail, args.scale)
    sim = ContentSimilarity()
    results["synthetic_scaled"] = {
        "data": f"synthetic: Online Retail titles x{args.scale}",
        "items": len(big),
        "content_fit_s": round(seconds(lambda: sim.fit(big), 1), 3),
        **query_ms(sim, [i.item_id for i in big], min(args.queries, 300)),
    }
    if args.minilm:
        start = time.perf_counter()
        emb = ContentSimilarity("minilm").fit(retail)
        results["minilm_online_retail"] = {
            "content_fit_s": round(time.perf_counter() - start, 2),
            **query_ms(emb, [i.item_id for i in retail], args.queries),
        }
    text = json.dumps(results, indent=2)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()
