"""Q4 — real-time prequential replay, Taobao sample and REES46 sample (BENCHMARKS.md, Q4).

One command::

    python bench/bench_q4_replay.py [--datasets taobao,rees46] [--max-users N]
                                    [--max-events N] [--arms frozen,live,full]

Per dataset:

- events cleaned as an import cleans them (``clean_events``), in time order (ties keep
  the file's order). Taobao: only the official window 2017-11-25..12-03 (UTC+8) is
  kept; its 35 older records are known dirty timestamps (they would stretch "the first
  70% of time" to September). The catalog (item → category, brand, price) is known up
  front, as a shop's catalog feed would be; it holds no interaction;
- split with ``evaluation.splits.prequential``: the first 70% of the time span trains
  the models (``train_bundle`` on a store holding only those events), the rest is the
  stream;
- each arm replays the whole stream, one event at a time, through the REAL service:
  the FastAPI app in-process (``httpx.ASGITransport``, lifespan run) over its own
  store holding the training events and a fresh copy of the trained bundle, the
  engine's clock at the event's time. Before each view, add_to_cart or purchase event: GET
  /v1/users/{user}/recommendations?k=20 (scene home; sessions/{id} for an anonymous
  event) and the event's item's rank is recorded; then POST /v1/events with the event
  (validated, appended, observed, 202). Favorites are ingested but not scored.
  Arms (settings ``recommend.*``): ``frozen`` (online_learning and live_sessions off:
  the batch model and the history it was trained on), ``live`` (+ live sessions),
  ``full`` (+ online learning); optional diagnostics: ``full_nodiv`` = ``full`` with the
  diversity rerank off (``merchandising.diversity`` 0), ``full_blend`` = ``full`` with a
  bundle trained without the learned ranker (the blend ranks). Impression logging is off
  (``log_impressions``): the impressions of a replay are not shopper events.
  ``--via direct`` calls what the two routes call (``validate_events`` → ``append`` →
  ``observe``; ``engine.recommend``) without HTTP: 2-3x faster on a busy machine, same
  ranks (checked on 1,500 REES46 stream events, arms full and frozen);
- baselines, minimal recommenders over the same stream in the same order (not the
  product's pipeline): ``popularity`` — the time-decayed ``Popularity`` model fitted on
  the training events and updated with every event (top 20, nothing excluded);
  ``covisit`` — item-to-item ``CoVisitation`` (fitted, updated online) scored from the
  shopper's live session (the last ``session_length`` events, training history
  included): neighbours of the 5 latest distinct items, no popularity fill.

HR@20 and MRR@20 (``evaluation.metrics``) over all scored events, and split into
events whose item the shopper had never interacted with before ("new item": the
product excludes purchased items, and repeats are most of a clickstream) and repeats.
``--max-users`` keeps a deterministic subset of shoppers (hash of the user id) for
everything (training and stream); ``--max-events`` cuts the stream. Both are reported.
``--bundle-cache DIR`` keeps the trained bundles in ``DIR/<dataset>/`` and reuses them
(train once, then replay arms in separate processes: ``--arms full --baselines ""``).
Prints a table per dataset and writes bench/results/q4_replay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl

from shopcast.api import create_app
from shopcast.config import ApiSettings, MerchandisingSettings, RecommendSettings, Settings
from shopcast.domain import Item
from shopcast.evaluation.metrics import hit_rate_at_k, mrr_at_k
from shopcast.evaluation.splits import event_frame, prequential
from shopcast.ingest.bulk import clean_events
from shopcast.ingest.datasets import load_dataset
from shopcast.ingest.validate import validate_events
from shopcast.models import CoVisitation, Popularity
from shopcast.models._base import EVENT_CODES, Context, Interactions, Vocabulary
from shopcast.serving.engine import Engine
from shopcast.serving.pipeline import RecommendRequest
from shopcast.serving.sources import SEED_ITEMS, latest_unique
from shopcast.storage import Store, open_store
from shopcast.training.bundle import ModelBundle, load_bundle, save_bundle, train_bundle
from shopcast.training.registry import ModelRegistry

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
K = 20
SCORED = ("view", "add_to_cart", "purchase")
#: Taobao UserBehavior's official window, 2017-11-25 00:00 to 2017-12-04 00:00 UTC+8.
TAOBAO_WINDOW = (1_511_539_200.0, 1_512_316_800.0)
#: Per arm of the dataset being replayed: how many answers named each degraded stage
#: (a source or the ranker skipped after an error or its timeout).
DEGRADED: dict[str, dict[str, int]] = {}
ARMS: dict[str, dict[str, Any]] = {
    "frozen": {"online_learning": False, "live_sessions": False},
    "live": {"online_learning": False, "live_sessions": True},
    "full": {"online_learning": True, "live_sessions": True},
    # Diagnostics, not in the protocol: the full arm without the diversity rerank, and
    # with a bundle trained without the learned ranker (the blend ranks).
    "full_nodiv": {"online_learning": True, "live_sessions": True, "diversity": 0.0},
    "full_blend": {"online_learning": True, "live_sessions": True, "ranker": False},
}


def keep_users(frame: pl.DataFrame, n: int) -> pl.DataFrame:
    """The ``n`` users with the smallest hash of their id (deterministic)."""
    users = frame["user_id"].drop_nulls().unique().to_list()
    digest = {u: hashlib.blake2b(u.encode(), digest_size=8).hexdigest() for u in users}
    chosen = sorted(users, key=digest.__getitem__)[:n]
    return frame.filter(pl.col("user_id").is_in(chosen))


def load(name: str, data_path: Path, max_users: int | None) -> tuple[pl.DataFrame, list[Item]]:
    frames = load_dataset(name, data_path=data_path)
    cleaned = clean_events(frames.events, now=time.time()).frame
    if name == "taobao":
        lo, hi = TAOBAO_WINDOW
        cleaned = cleaned.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi))
    if max_users:
        cleaned = keep_users(cleaned, max_users)
    ordered = cleaned.with_row_index("_row").sort(["ts", "_row"]).drop("_row")
    return ordered, list(frames.items)


def settings_for(work: Path, model_dir: Path | None = None, **recommend: Any) -> Settings:
    recommend.pop("ranker", None)  # a property of the bundle, not a setting
    if "log_impressions" in RecommendSettings.model_fields:
        recommend = {"log_impressions": False, **recommend}
    extra: dict[str, Any] = {}
    if "diversity" in recommend:
        extra["merchandising"] = MerchandisingSettings(diversity=recommend.pop("diversity"))
    if "auth" in Settings.model_fields:  # an in-process replay needs no API keys
        extra["auth"] = {"enabled": False}
    return Settings(
        environment="test",
        database_url="memory://",
        model_dir=model_dir or work / "models",
        api=ApiSettings(reload_interval_s=3600.0),
        recommend=RecommendSettings(**recommend),
        **extra,
    )


def train_like_the_cli(
    store: Store, settings: Settings, *, ranker: bool | None = None
) -> ModelBundle:
    """``train_bundle`` as `shopcast train` calls it (whatever this version accepts)."""
    accepted = inspect.signature(train_bundle).parameters
    extra: dict[str, Any] = {}
    if ranker is not None and "ranker" in accepted:
        extra["ranker"] = ranker
    if "settings" in accepted:
        extra["settings"] = settings
    if "training" in accepted and hasattr(settings, "training"):
        extra["training"] = settings.training
    return train_bundle(store, settings.recommend, **extra)


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the source tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout

    changed = [line[3:] for line in git("status", "--porcelain", "src").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted_src": changed}


def new_store(items: Sequence[Item], train: pl.DataFrame) -> Store:
    store = open_store("memory://")
    store.items.upsert(list(items))
    store.events.append_frame(train)
    return store


def event_json(row: dict[str, Any]) -> dict[str, Any]:
    """The event as a client would POST it."""
    body = {k: v for k, v in row.items() if v is not None and k not in ("ts", "context")}
    body["timestamp"] = row["ts"]
    if row.get("context"):
        body["context"] = json.loads(row["context"])
    return body


def rec_path(row: dict[str, Any]) -> str:
    if row["user_id"] is not None:
        return f"/v1/users/{row['user_id']}/recommendations"
    return f"/v1/sessions/{row['session_id']}/recommendations"


def replay_arm(
    arm: str,
    work: Path,
    items: Sequence[Item],
    train: pl.DataFrame,
    stream: pl.DataFrame,
    bundle_path: Path,
    progress: Callable[[str], None],
    via: str = "http",
) -> np.ndarray:
    """Ranks (0-based, -1 = not in the top K) of each scored event's item, in order."""
    if via == "direct":
        return _replay_direct(arm, work, items, train, stream, bundle_path, progress)
    return asyncio.run(_replay_arm(arm, work, items, train, stream, bundle_path, progress))


def _replay_direct(
    arm: str,
    work: Path,
    items: Sequence[Item],
    train: pl.DataFrame,
    stream: pl.DataFrame,
    bundle_path: Path,
    progress: Callable[[str], None],
) -> np.ndarray:
    """What the two routes do, called directly (no HTTP, no thread pool hand-offs):
    ``validate_events`` → ``store.events.append`` → ``engine.observe`` for the POST, and
    ``engine.recommend`` with the request ``GET …/recommendations?k=20`` builds."""
    settings = settings_for(work, bundle_path.parent, **ARMS[arm])
    store = new_store(items, train)
    clock = [float(stream["ts"][0])]
    engine = Engine(store, settings, load_bundle(bundle_path), clock=lambda: clock[0])
    ranks: list[int] = []
    degraded = DEGRADED.setdefault(arm, {})
    started = time.perf_counter()
    for n, row in enumerate(stream.iter_rows(named=True)):
        clock[0] = row["ts"]
        if row["type"] in SCORED:
            who = (
                {"user_id": row["user_id"]}
                if row["user_id"] is not None
                else {"session_id": row["session_id"]}
            )
            rec = engine.recommend(RecommendRequest(k=K, scene="home", **who))
            ids = [i.item_id for i in rec.items]
            ranks.append(ids.index(row["item_id"]) if row["item_id"] in ids else -1)
            for name in getattr(rec, "degraded", None) or []:
                degraded[name] = degraded.get(name, 0) + 1
        checked = validate_events(
            json.loads(json.dumps(event_json(row))), max_batch=settings.api.max_batch
        )
        if checked.errors:
            raise SystemExit(f"{arm}: event rejected: {checked.errors}")
        result = store.events.append(checked.events)
        engine.observe([checked.events[i] for i in result.stored])
        if n and n % 5000 == 0:
            rate = n / (time.perf_counter() - started)
            progress(f"  {arm}: {n}/{stream.height} events ({rate:.0f}/s)")
    close = getattr(engine, "close", None)
    if close is not None:
        close()
    store.close()
    return np.asarray(ranks, dtype=np.int64)


async def _replay_arm(
    arm: str,
    work: Path,
    items: Sequence[Item],
    train: pl.DataFrame,
    stream: pl.DataFrame,
    bundle_path: Path,
    progress: Callable[[str], None],
) -> np.ndarray:
    settings = settings_for(work, bundle_path.parent, **ARMS[arm])
    store = new_store(items, train)
    clock = [float(stream["ts"][0])]
    engine = Engine(store, settings, load_bundle(bundle_path), clock=lambda: clock[0])
    app = create_app(settings, store=store, engine=engine)
    ranks: list[int] = []
    degraded = DEGRADED.setdefault(arm, {})
    spent = {"get": 0.0, "post": 0.0}
    started = time.perf_counter()
    # The app in this event loop (lifespan included): no test-client thread hops per call.
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://replay") as client,
    ):
        for n, row in enumerate(stream.iter_rows(named=True)):
            clock[0] = row["ts"]
            if row["type"] in SCORED:
                t0 = time.perf_counter()
                r = await client.get(rec_path(row), params={"k": K})
                spent["get"] += time.perf_counter() - t0
                if r.status_code != 200:
                    raise SystemExit(f"{arm}: GET {rec_path(row)} answered {r.status_code}")
                answer = r.json()
                ids = [i["item_id"] for i in answer["items"]]
                ranks.append(ids.index(row["item_id"]) if row["item_id"] in ids else -1)
                for name in answer.get("degraded") or []:
                    degraded[name] = degraded.get(name, 0) + 1
            t0 = time.perf_counter()
            posted = await client.post("/v1/events", json=event_json(row))
            spent["post"] += time.perf_counter() - t0
            if posted.status_code != 202:
                raise SystemExit(f"{arm}: POST /v1/events answered {posted.status_code}")
            if n and n % 5000 == 0:
                rate = n / (time.perf_counter() - started)
                progress(f"  {arm}: {n}/{stream.height} events ({rate:.0f}/s)")
    close = getattr(engine, "close", None)
    if close is not None:
        close()
    store.close()
    progress(
        f"  {arm}: {1000 * spent['get'] / max(len(ranks), 1):.1f} ms per GET, "
        f"{1000 * spent['post'] / max(stream.height, 1):.1f} ms per POST"
    )
    return np.asarray(ranks, dtype=np.int64)


# -- baselines ---------------------------------------------------------------------------


class _Stream:
    """The stream as model inputs: vocabularies shared with the training data."""

    def __init__(self, items: Sequence[Item], train: pl.DataFrame) -> None:
        self.items = Vocabulary(i.item_id for i in items)
        self.users = Vocabulary()
        self.train = Interactions.from_frame(train, users=self.users, items=self.items)

    def one(self, row: dict[str, Any]) -> Interactions:
        subject = f"u:{row['user_id']}" if row["user_id"] is not None else f"s:{row['session_id']}"
        return Interactions(
            users=self.users,
            items=self.items,
            user=self.users.indices([subject], add=True),
            item=self.items.indices([row["item_id"]], add=True),
            type=np.asarray([EVENT_CODES[row["type"]]], dtype=np.int64),
            ts=np.asarray([row["ts"]], dtype=np.float64),
            value=np.asarray([np.nan if row["value"] is None else row["value"]]),
        )


def _rank(top: Sequence[int], item: int) -> int:
    return top.index(item) if item in top else -1


def replay_popularity(
    cfg: RecommendSettings, items: Sequence[Item], train: pl.DataFrame, stream: pl.DataFrame
) -> np.ndarray:
    data = _Stream(items, train)
    model = Popularity(cfg.popularity_half_life_days, cfg.event_weights).fit(data.train)
    ranks: list[int] = []
    for row in stream.iter_rows(named=True):
        if row["type"] in SCORED:
            ranks.append(_rank(model.top(K).tolist(), data.items.index(row["item_id"])))
        model.learn(data.one(row))
    return np.asarray(ranks, dtype=np.int64)


def replay_covisit(
    cfg: RecommendSettings, items: Sequence[Item], train: pl.DataFrame, stream: pl.DataFrame
) -> np.ndarray:
    data = _Stream(items, train)
    model = CoVisitation(
        window=cfg.covisit_window,
        half_life_days=cfg.covisit_half_life_days,
        event_weights=cfg.event_weights,
    ).fit(data.train)
    sessions: dict[int, deque[tuple[int, int, float]]] = {}

    def remember(x: Interactions) -> None:
        rows = zip(x.user.tolist(), x.item.tolist(), x.type.tolist(), x.ts.tolist(), strict=True)
        for u, i, t, ts in rows:
            sessions.setdefault(u, deque(maxlen=cfg.session_length)).append((i, t, ts))

    remember(data.train)
    ranks: list[int] = []
    for row in stream.iter_rows(named=True):
        event = data.one(row)
        if row["type"] in SCORED:
            live = sessions.get(int(event.user[0]), ())
            recent = np.asarray([e[0] for e in live], dtype=np.int64)
            top: list[int] = []
            seeds = latest_unique(recent, SEED_ITEMS)
            if seeds.size:
                pool = np.unique(np.concatenate([model.neighbors(int(s), K)[0] for s in seeds]))
                context = Context(
                    now=row["ts"],
                    recent_items=recent,
                    recent_types=np.asarray([e[1] for e in live], dtype=np.int64),
                    recent_ts=np.asarray([e[2] for e in live], dtype=np.float64),
                )
                scores = model.score(context, pool)
                keep = scores > 0
                pool, scores = pool[keep], scores[keep]
                top = pool[np.argsort(-scores, kind="stable")[:K]].tolist()
            ranks.append(_rank(top, int(event.item[0])))
        model.learn(event)
        remember(event)
    return np.asarray(ranks, dtype=np.int64)


# -- metrics -----------------------------------------------------------------------------


def metrics(ranks: np.ndarray) -> dict[str, float]:
    """HR@K and MRR@K over events (``evaluation.metrics`` on a one-hit-per-row matrix)."""
    if not ranks.size:
        return {"events": 0}
    hits = np.zeros((ranks.shape[0], K), dtype=bool)
    found = ranks >= 0
    hits[np.flatnonzero(found), ranks[found]] = True
    return {
        "events": int(ranks.shape[0]),
        f"HR@{K}": round(float(hit_rate_at_k(hits, K).mean()), 4),
        f"MRR@{K}": round(float(mrr_at_k(hits, K).mean()), 4),
    }


def breakdown(ranks: np.ndarray, new: np.ndarray, types: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"all": metrics(ranks)}
    out["new_item"] = metrics(ranks[new])
    out["repeat"] = metrics(ranks[~new])
    out["by_type"] = {t: metrics(ranks[types == t]) for t in SCORED if (types == t).any()}
    return out


def scored_facts(train: pl.DataFrame, stream: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per scored stream event: is its item new to the shopper (no earlier event)? Its type."""
    seen: set[tuple[str, str]] = set()
    for row in train.select("user_id", "session_id", "item_id").iter_rows():
        seen.add((row[0] or f"s:{row[1]}", row[2]))
    new: list[bool] = []
    types: list[str] = []
    for row in stream.select("user_id", "session_id", "item_id", "type").iter_rows():
        key = (row[0] or f"s:{row[1]}", row[2])
        if row[3] in SCORED:
            new.append(key not in seen)
            types.append(row[3])
        seen.add(key)
    return np.asarray(new, dtype=bool), np.asarray(types)


# -- driver ------------------------------------------------------------------------------


@contextmanager
def stopwatch(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - started, 1)


def run_dataset(name: str, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    frame, items = load(name, args.data_path, args.max_users)
    split = prequential(event_frame(frame), args.warmup)
    train = frame.filter(pl.col("ts") < split.cutoff)
    stream = frame.filter(pl.col("ts") >= split.cutoff)
    assert train.height == split.warmup.height, "split disagrees with evaluation.splits"
    full_stream = stream.height
    if args.max_events:
        stream = stream.head(args.max_events)
    new, types = scored_facts(train, stream)
    train_users = set(train["user_id"].drop_nulls().to_list())
    stream_users = set(stream["user_id"].drop_nulls().to_list())
    log(
        f"{name}: {frame.height} events; train {train.height} (before "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(split.cutoff))} UTC), stream "
        f"{stream.height} of {full_stream}, scored {new.shape[0]} ({new.mean():.0%} new items)"
    )
    timings: dict[str, float] = {}
    results: dict[str, Any] = {}
    DEGRADED.clear()
    with tempfile.TemporaryDirectory(prefix=f"shopcast-q4-{name}-") as tmp:
        work = Path(tmp)
        settings = settings_for(work)
        cache = args.bundle_cache / name if args.bundle_cache else None

        def bundle_at(model_dir: Path, ranker: bool | None) -> Path:
            """A bundle trained on ``train`` (reused from the cache when there)."""
            if cache is not None:
                model_dir = cache / model_dir.name
                version = ModelRegistry(model_dir).current()
                if version is not None:
                    return ModelRegistry(model_dir).path(version)
            store = new_store(items, train)
            bundle = train_like_the_cli(store, settings, ranker=ranker)
            store.close()
            log(f"  ranker: {json.dumps(bundle.stats.get('ranker'), default=str)[:600]}")
            return save_bundle(bundle, model_dir)

        with stopwatch(timings, "train"):
            bundle_path = bundle_at(settings.model_dir, None)
        bundle = load_bundle(bundle_path)
        model_roles = {role: type(m).__name__ for role, m in bundle.models.items()}
        log(f"  bundle: {model_roles} ({bundle_path})")
        paths = {True: bundle_path}
        if any(ARMS[arm].get("ranker") is False for arm in args.arms):
            paths[False] = bundle_at(work / "models-blend", False)
        for arm in args.arms:
            log(f"  arm {arm} ...")
            arm_bundle = paths[ARMS[arm].get("ranker", True) is not False]
            with stopwatch(timings, arm):
                ranks = replay_arm(arm, work, items, train, stream, arm_bundle, log, args.via)
            results[arm] = breakdown(ranks, new, types)
    cfg = settings.recommend
    for base, fn in (("popularity", replay_popularity), ("covisit", replay_covisit)):
        if base not in args.baselines:
            continue
        log(f"  baseline {base} ...")
        with stopwatch(timings, base):
            results[base] = breakdown(fn(cfg, items, train, stream), new, types)
    hr = {k: v["all"].get(f"HR@{K}", 0.0) for k, v in results.items()}
    targets: dict[str, Any] = {}
    if "full" in hr and "frozen" in hr:
        gain = hr["full"] / hr["frozen"] - 1 if hr["frozen"] else float("inf")
        targets["full_vs_frozen_hr_gain"] = round(gain, 3)
        targets["full_beats_frozen_by_30pct"] = gain >= 0.30
    for base in ("popularity", "covisit"):
        if "full" in hr and base in hr:
            targets[f"full_beats_{base}"] = hr["full"] > hr[base]
    return {
        "events": frame.height,
        "train_events": train.height,
        "stream_events": stream.height,
        "stream_events_total": full_stream,
        "cutoff_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(split.cutoff)),
        "scored_events": int(new.shape[0]),
        "scored_new_item_share": round(float(new.mean()), 4) if new.size else 0.0,
        "stream_users": len(stream_users),
        "stream_users_unseen_in_train": len(stream_users - train_users),
        "items_in_catalog": len(items),
        "subsample": {"max_users": args.max_users, "max_events": args.max_events},
        "via": args.via,
        "bundle_models": model_roles,
        "degraded_answers": dict(DEGRADED),
        "results": results,
        "targets": targets,
        "seconds": timings,
    }


def print_table(name: str, res: dict[str, Any]) -> None:
    print(
        f"\n{name}: stream {res['stream_events']} events, {res['scored_events']} scored "
        f"({res['scored_new_item_share']:.0%} new to the shopper)"
    )
    head = f"{'':<12}{'HR@20':>8}{'MRR@20':>8}{'HR@20 new':>11}{'MRR@20 new':>12}{'HR@20 rep':>11}"
    print(head)
    for label, r in res["results"].items():
        a, n, p = r["all"], r["new_item"], r["repeat"]
        print(
            f"{label:<12}{a.get('HR@20', 0):>8.4f}{a.get('MRR@20', 0):>8.4f}"
            f"{n.get('HR@20', 0):>11.4f}{n.get('MRR@20', 0):>12.4f}{p.get('HR@20', 0):>11.4f}"
        )
    print(f"targets: {res['targets']}   seconds: {res['seconds']}")
    print(f"bundle: {res['bundle_models']}   degraded answers: {res['degraded_answers']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="taobao,rees46")
    parser.add_argument("--arms", default="frozen,live,full")
    parser.add_argument("--max-users", type=int, default=None, help="deterministic subset")
    parser.add_argument("--max-events", type=int, default=None, help="first N stream events")
    parser.add_argument("--via", choices=("http", "direct"), default="http")
    parser.add_argument("--warmup", type=float, default=0.7, help="share of time to train on")
    parser.add_argument(
        "--data-path",
        type=Path,
        default=Path(os.environ.get("SHOPCAST_DATA", ROOT.parent / "shared" / "datasets")),
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "q4_replay.json")
    parser.add_argument("--baselines", default="popularity,covisit")
    parser.add_argument("--bundle-cache", type=Path, default=None, help="reuse bundles")
    args = parser.parse_args()
    args.arms = [a for a in args.arms.split(",") if a]
    args.baselines = [b for b in args.baselines.split(",") if b]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")

    def log(message: str) -> None:
        print(message, flush=True)

    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    load_start = os.getloadavg()[0]
    code = code_version()
    datasets: dict[str, Any] = {}
    for name in [d for d in args.datasets.split(",") if d]:
        datasets[name] = run_dataset(name, args, log)
        print_table(name, datasets[name])
        out = {
            "benchmark": "Q4 prequential replay",
            "command": " ".join(["python", "bench/bench_q4_replay.py", *sys.argv[1:]]),
            "code": code,
            "machine": {
                "cpus": os.cpu_count(),
                "date_utc": started,
                "loadavg_1m_start": load_start,
                "loadavg_1m_end": os.getloadavg()[0],
            },
            "protocol": {
                "k": K,
                "warmup_share_of_time": args.warmup,
                "scored_types": list(SCORED),
                "scene": "home",
                "repeat_consumption": "counted in 'all'; 'new_item' = item the shopper had no "
                "earlier event with (training history included); 'repeat' = the rest",
            },
            "datasets": datasets,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")  # after each dataset
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
