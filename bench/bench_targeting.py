"""Targeting on the REAL UCI Online Retail log: do the targeted users buy the item?

Protocol (nothing of the evaluated month is seen by any model or baseline):

- state trained on invoices before ``--cut`` (2011-11-09): ``Targeter`` (the profiles'
  decayed event matrix), co-visitation and bought-together models (the bundle's), the
  TF-IDF content index; decay ``now`` = the cut;
- targets: every item bought in the month after the cut (2011-11-09 .. 2011-12-09) by
  ≥ 5 distinct customers seen in training; each is targeted on its own (an item target);
- truth: the customers seen in training who bought it in that month. Variant
  ``all``: every such buyer, targeting with ``exclude_buyers=False``; variant ``new``:
  only those who had not bought it before the cut, everyone ranks the users who had not
  (``exclude_buyers=True``) — the promotion case;
- recall@N = buyers among the top N / buyers, averaged over the targets (N = 10, 50,
  100, 500; 4,067 candidate users).

Online Retail has no categories, so they are derived: spherical k-means (k = ``--k``,
seeded) over the items' TF-IDF title vectors, each cluster named by its two heaviest
terms. Shopcast's category signal and content neighbours and the category baseline all
see the same derived categories.

Baselines: ``random`` (a seeded shuffle per target), ``category`` (users by their
number of purchase lines in the target's derived category, ties by total purchase
lines: popularity of the category among users), ``most_active`` (users by total
purchase lines).

The blend weights are chosen on a validation month first (state before 2011-10-09,
evaluated on 2011-10-09 .. 2011-11-09; grid printed), then applied unchanged to the
test month. ``--scale`` times ``Targeter.rank`` on a SYNTHETIC log of 100k users.

Run: ``.venv/bin/python bench/bench_targeting.py`` (reads the data from SHOPCAST_DATA /
``Settings.data_path``); prints tables, writes ``bench/results/targeting.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shopcast.config import RecommendSettings
from shopcast.domain import Item
from shopcast.features.similarity import ContentSimilarity
from shopcast.features.targeting import (
    SIGNALS,
    Neighbours,
    Targeter,
    TargetingQuery,
    TargetingWeights,
    blend,
    content_neighbours,
    model_neighbours,
    transform,
)
from shopcast.features.text import TfidfText, item_text
from shopcast.ingest.bulk import clean_events
from shopcast.ingest.datasets import load_dataset
from shopcast.models import Interactions, Vocabulary
from shopcast.training.bundle import make_models

RESULTS = Path(__file__).parent / "results" / "targeting.json"
NS = (10, 50, 100, 500)
DAY = 86_400.0


def ts(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


# -- derived categories -------------------------------------------------------------------


def derived_categories(items: list[Item], k: int, seed: int) -> dict[str, str]:
    """item id -> cluster name: spherical k-means over TF-IDF title rows (seeded)."""
    encoder = TfidfText(min_df=2).fit([item_text(i) for i in items])
    x = encoder.transform([item_text(i) for i in items]).toarray()
    has = np.linalg.norm(x, axis=1) > 0
    rows = x[has]
    rng = np.random.default_rng(seed)
    centres = [rows[rng.integers(rows.shape[0])]]
    for _ in range(1, k):  # k-means++ on cosine distance
        d = 1.0 - np.max(rows @ np.array(centres).T, axis=1)
        p = np.maximum(d, 0) ** 2
        centres.append(rows[rng.choice(rows.shape[0], p=p / p.sum())])
    c = np.array(centres)
    labels = np.zeros(rows.shape[0], np.int64)
    for _ in range(30):
        new = np.argmax(rows @ c.T, axis=1)
        if (new == labels).all() and _ > 0:
            break
        labels = new
        for j in range(k):
            members = rows[labels == j]
            if members.shape[0]:
                v = members.sum(axis=0)
                c[j] = v / np.linalg.norm(v)
    terms = encoder.terms
    names = [" ".join(terms[t] for t in np.argsort(-c[j])[:2]) for j in range(k)]
    ids = [i.item_id for i, h in zip(items, has, strict=True) if h]
    return {i: names[int(label)] for i, label in zip(ids, labels, strict=True)}


# -- one split ----------------------------------------------------------------------------


@dataclass
class Split:
    targeter: Targeter
    relations: dict[str, Neighbours]
    now: float
    targets: list[str]
    truth_all: dict[str, np.ndarray]  # item -> buyer rows (users_ of the targeter)
    truth_new: dict[str, np.ndarray]
    purchases: np.ndarray  # purchase lines per user row (training)
    cat_purchases: dict[str, np.ndarray]  # category -> purchase lines per user row
    category_of: dict[str, str]
    fit_s: float


def build_split(
    frame: pl.DataFrame, items: list[Item], users: Any, cut: float, end: float
) -> Split:
    train = frame.filter(pl.col("ts") < cut)
    test = frame.filter((pl.col("ts") >= cut) & (pl.col("ts") < end))
    started = time.perf_counter()
    targeter = Targeter().fit(train, items, users)
    vocab = Vocabulary(i.item_id for i in items)
    models = make_models(RecommendSettings())
    data = Interactions.from_frame(train, items=vocab)
    for model in models.values():
        model.fit(data)
    content = ContentSimilarity().fit(items)
    fit_s = time.perf_counter() - started
    relations = {
        "bought_together": model_neighbours(models["bought_together"], vocab),  # type: ignore[arg-type]
        "covisit": model_neighbours(models["covisit"], vocab),  # type: ignore[arg-type]
        "similar": content_neighbours(content),
    }
    known = targeter.users_
    bought = (
        test.filter(pl.col("user_id").is_not_null() & (pl.col("type") == "purchase"))
        .select("user_id", "item_id")
        .unique()
        .with_columns(
            row=pl.col("user_id").replace_strict(known.ids, range(len(known)), default=-1)
        )
        .filter(pl.col("row") >= 0)
    )
    before = (
        train.filter(pl.col("user_id").is_not_null() & (pl.col("type") == "purchase"))
        .select("user_id", "item_id")
        .unique()
        .with_columns(prev=pl.lit(True))
    )
    bought = bought.join(before, on=["user_id", "item_id"], how="left")
    groups = bought.group_by("item_id").agg(pl.col("row"), pl.col("prev").is_null().alias("new"))
    groups = groups.filter(pl.col("row").list.len() >= 5).sort("item_id")
    truth_all, truth_new = {}, {}
    for item, rows, new in groups.iter_rows():
        r = np.array(rows, np.int64)
        truth_all[item] = r
        truth_new[item] = r[np.array(new, bool)]
    category_of = {i.item_id: i.category[0] for i in items if i.category}
    lines = train.filter(pl.col("user_id").is_not_null() & (pl.col("type") == "purchase"))
    lines = lines.with_columns(
        row=pl.col("user_id").replace_strict(known.ids, range(len(known)), default=-1),
        cat=pl.col("item_id").replace_strict(category_of, default=None),
    )
    purchases = np.bincount(lines["row"].to_numpy(), minlength=len(known)).astype(float)
    cat_purchases: dict[str, np.ndarray] = {}
    for (cat,), part in lines.drop_nulls("cat").group_by(["cat"]):
        cat_purchases[str(cat)] = np.bincount(part["row"].to_numpy(), minlength=len(known))
    return Split(
        targeter, relations, cut, list(truth_all), truth_all, truth_new,
        purchases, cat_purchases, category_of, fit_s,
    )  # fmt: skip


# -- evaluation ---------------------------------------------------------------------------


def recall(order: np.ndarray, truth: np.ndarray) -> list[float]:
    """recall@N of one ranking (user rows, best first) for each N in NS."""
    if not truth.size:
        return [np.nan] * len(NS)
    rank = np.full(order.max(initial=0) + 1, np.iinfo(np.int64).max)
    rank[order] = np.arange(order.shape[0])
    r = rank[truth[truth < rank.shape[0]]]
    return [float((r < n).sum()) / truth.size for n in NS]


def top_order(score: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rows by score descending (ties: lower row first), only where ``mask``."""
    rows = np.flatnonzero(mask)
    keep = rows[np.lexsort((rows, -score[rows]))]
    return keep[: NS[-1]]


def evaluate(
    split: Split, configs: list[TargetingWeights], targets: list[str], seed: int
) -> dict[str, Any]:
    """Mean recall@N per method and variant over ``targets``."""
    t = split.targeter
    rng = np.random.default_rng(seed)
    n = len(t.users_)
    methods: dict[str, dict[str, list[list[float]]]] = {}

    def add(name: str, variant: str, values: list[float]) -> None:
        methods.setdefault(name, {}).setdefault(variant, []).append(values)

    started = time.perf_counter()
    for item in targets:
        query = TargetingQuery(item_id=item)
        target = t.resolve(query)
        raw = t.raw_signals(target, split.relations, split.now)
        previous = t.buyers(item)
        cat = split.category_of.get(item)
        cat_count = split.cat_purchases.get(cat, np.zeros(n)) if cat else np.zeros(n)
        baselines = {
            "random": rng.permutation(n).astype(float),
            "category": cat_count * 1e6 + split.purchases,
            "most_active": split.purchases,
        }
        for variant, mask, truth in (
            ("all", np.ones(n, bool), split.truth_all[item]),
            ("new", ~previous, split.truth_new[item]),
        ):
            if not truth.size:
                continue
            for k, weights in enumerate(configs):
                score = blend(transform(raw, weights), weights)
                add(f"shopcast#{k}", variant, recall(top_order(score, mask), truth))
            for name, score in baselines.items():
                add(name, variant, recall(top_order(score, mask), truth))
    elapsed = time.perf_counter() - started
    out: dict[str, Any] = {"targets": len(targets), "seconds": round(elapsed, 1)}
    for name, variants in methods.items():
        out[name] = {}
        for v, rows in variants.items():
            arr = np.array(rows)
            n_ok = np.sum(~np.isnan(arr), axis=0)
            mean = np.nanmean(arr, axis=0)
            se = np.nanstd(arr, axis=0, ddof=1) / np.sqrt(n_ok)  # of the mean over targets
            out[name][v] = {
                f"recall@{k}": round(float(m), 4) for k, m in zip(NS, mean, strict=True)
            }
            out[name][v] |= {f"se@{k}": round(float(e), 4) for k, e in zip(NS, se, strict=True)}
            out[name][v]["targets"] = len(rows)
    return out


def objective(result: dict[str, Any], k: int) -> float:
    """Mean of recall@50 and @100 over both variants."""
    r = result[f"shopcast#{k}"]
    return float(np.mean([r[v][f"recall@{n}"] for v in ("all", "new") for n in (50, 100)]))


def grid() -> list[TargetingWeights]:
    """Blend weights tried on the validation month (price 0.1, brand unused here)."""
    base = TargetingWeights()
    out = []
    for item, relation, similar, category, activity, scale in itertools.product(
        (1.0, 2.0), (1.0, 2.0), (0.3, 0.6), (0.25, 0.5, 1.0), (0.15, 0.3), (5.0, 10.0)
    ):
        out.append(
            replace(
                base,
                item=item,
                bought_together=relation,
                covisit=0.6 * relation,
                similar=similar,
                category=category,
                activity=activity,
                relation_scale=scale,
            )
        )
    return out


# -- scale (SYNTHETIC) --------------------------------------------------------------------


def scale_timing(n_users: int, n_items: int, per_user: int, seed: int) -> dict[str, Any]:
    """SYNTHETIC: time ``rank`` over ``n_users`` users with ``per_user`` events each."""
    rng = np.random.default_rng(seed)
    n = n_users * per_user
    pop = rng.zipf(1.3, n) % n_items
    frame = pl.DataFrame(
        {
            "type": rng.choice(["view", "add_to_cart", "purchase"], n, p=[0.8, 0.12, 0.08]),
            "user_id": (rng.integers(0, n_users, n)).astype(str),
            "item_id": pop.astype(str),
            "ts": 1.7e9 + rng.uniform(0, 180 * DAY, n),
            "price": rng.uniform(1, 100, n),
        }
    )
    items = [
        Item(item_id=str(i), title=f"item {i}", category=[f"c{i % 50}", f"d{i % 500}"],
             brand=f"b{i % 200}", price=float(1 + i % 97))
        for i in range(n_items)
    ]  # fmt: skip
    started = time.perf_counter()
    targeter = Targeter().fit(frame, items, [])
    fit_s = time.perf_counter() - started
    neighbours = {
        str(i): [(str((i * 7 + k) % n_items), 1.0 / (k + 1)) for k in range(100)]
        for i in range(200)
    }

    def fake(item_id: str, k: int) -> list[tuple[str, float]]:
        return neighbours.get(item_id, [])[:k]

    relations = {"bought_together": fake, "covisit": fake}
    now = 1.7e9 + 180 * DAY
    timings: dict[str, list[float]] = {}
    queries = {
        "item": TargetingQuery(item_id="3", limit=100),
        "category": TargetingQuery(category="c7", limit=100),
        "item_limit_10000": TargetingQuery(item_id="5", limit=10_000),
    }
    for name, query in queries.items():
        targeter.rank(query, now=now, relations=relations)  # warm (caches)
        for _ in range(5):
            t0 = time.perf_counter()
            targeter.rank(query, now=now, relations=relations)
            timings.setdefault(name, []).append(time.perf_counter() - t0)
    return {
        "data": "synthetic",
        "users": len(targeter.users_),
        "items": n_items,
        "events": n,
        "fit_s": round(fit_s, 2),
        **{f"rank_{k}_ms_median": round(1000 * float(np.median(v)), 1) for k, v in timings.items()},
    }


# -- main ---------------------------------------------------------------------------------


def table(result: dict[str, Any], names: dict[str, str]) -> str:
    lines = []
    for variant in ("all", "new"):
        what = "every buyer" if variant == "all" else "buyers who had not bought it before"
        lines.append(f"variant {variant}: {what}")
        lines.append(f"  {'method':30s}" + "".join(f"{'R@' + str(n):>8s}" for n in NS))
        for key, label in names.items():
            r = result[key][variant]
            lines.append(f"  {label:30s}" + "".join(f"{r[f'recall@{n}']:8.3f}" for n in NS))
        se = max(result[k][variant][f"se@{n}"] for k in names for n in NS)
        lines.append(f"  (standard error of each mean over targets <= {se:.3f})")
    return "\n".join(lines)


#: The weights written by hand before the validation grid (for comparison).
HAND_SET = TargetingWeights(
    item=1.0, bought_together=1.0, covisit=0.6, similar=0.3, category=0.5, relation_scale=5.0
)


def validate(split: Split, args: argparse.Namespace) -> tuple[TargetingWeights, dict[str, Any]]:
    """The grid on the validation month: the best weights and a summary."""
    rng = np.random.default_rng(args.seed)
    n = min(args.val_targets, len(split.targets))
    sample = sorted(rng.choice(split.targets, n, replace=False).tolist())
    configs = [TargetingWeights(), *grid()]
    res = evaluate(split, configs, sample, args.seed)
    scores = [objective(res, k) for k in range(len(configs))]
    best = int(np.argmax(scores))
    print(f"validation: {n} of {len(split.targets)} targets, {len(configs)} weight sets")
    print(f"  service defaults {scores[0]:.4f}; best #{best} {scores[best]:.4f}")
    summary = {
        "targets": n,
        "configs": len(configs),
        "objective": "mean recall@50 and @100 over both variants",
        "defaults_objective": round(scores[0], 4),
        "best_objective": round(scores[best], 4),
        "best_weights": configs[best].as_dict(),
        "top5": [
            {"objective": round(scores[k], 4), "weights": configs[k].as_dict()}
            for k in np.argsort(scores)[::-1][:5].tolist()
        ],
    }
    return configs[best], summary


def reason_counts(split: Split, every: int) -> dict[str, int]:
    """Which signal is the reason of the top-10 users (buyers excluded), every n-th target."""
    counts: dict[str, int] = {}
    for item in split.targets[::every]:
        query = TargetingQuery(item_id=item, limit=10)
        for u in split.targeter.rank(query, now=split.now, relations=split.relations).users:
            top = max(SIGNALS, key=lambda s: u.signals[s])
            counts[top] = counts.get(top, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cut", default="2011-11-09")
    parser.add_argument("--end", default="2011-12-10")
    parser.add_argument("--val-cut", default="2011-10-09")
    parser.add_argument("--k", type=int, default=50, help="derived categories")
    parser.add_argument("--val-targets", type=int, default=600, help="validation sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-tune", action="store_true", help="skip the validation grid")
    parser.add_argument("--scale-users", type=int, default=100_000, help="0: skip")
    args = parser.parse_args()

    started = time.perf_counter()
    data = load_dataset("online-retail")
    frame = clean_events(data.events, now=ts(args.end)).frame
    frame = frame.with_columns(seq=pl.int_range(1, frame.height + 1, dtype=pl.Int64))
    clusters = derived_categories(data.items, args.k, args.seed)
    items = [
        i.model_copy(update={"category": [clusters[i.item_id]]}) if i.item_id in clusters else i
        for i in data.items
    ]
    n_clusters = len(set(clusters.values()))
    print(f"loaded {frame.height:,} events, {len(items):,} items, {n_clusters} derived categories")
    out: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        },
        "protocol": vars(args),
        "derived_categories": sorted(set(clusters.values())),
    }
    chosen = TargetingWeights()
    if not args.no_tune:
        val = build_split(frame, items, data.users, ts(args.val_cut), ts(args.cut))
        chosen, out["validation"] = validate(val, args)

    test = build_split(frame, items, data.users, ts(args.cut), ts(args.end))
    configs = {"shopcast": TargetingWeights(), "shopcast (hand-set weights)": HAND_SET}
    if chosen != TargetingWeights():
        configs["shopcast (validation best now)"] = chosen
    res = evaluate(test, list(configs.values()), test.targets, args.seed)
    names = {f"shopcast#{k}": label for k, label in enumerate(configs)}
    names |= {"random": "random", "category": "category popularity"}
    names["most_active"] = "most active users"
    users = len(test.targeter.users_)
    print(f"test: {len(test.targets)} targets, {users:,} users seen in training")
    print(f"  state fit {test.fit_s:.1f} s, evaluation {res['seconds']} s")
    print(table(res, names))
    reasons = reason_counts(test, max(1, len(test.targets) // 100))
    print(f"strongest signal of the top-10 users (buyers excluded, ~100 targets): {reasons}")
    out["test"] = {
        "targets": len(test.targets),
        "users": users,
        "state_fit_s": round(test.fit_s, 2),
        "weights": TargetingWeights().as_dict(),
        "results": {names[k]: res[k] for k in names},
        "top10_reason_signals": reasons,
    }
    if args.scale_users:
        s = scale_timing(args.scale_users, 20_000, 50, args.seed)
        out["scale"] = s
        print(f"scale (synthetic): {s}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
