"""Training data for the learned ranker, from the event log, with a temporal split.

Protocol (``build_dataset``):

1. Item events (``item_id`` set) sorted by time. Three boundaries at event quantiles
   ``fractions`` (default 50 / 70 / 85 %) cut the log into: *history* (the candidate
   bundle is fitted on it alone), the *train* window, the *valid* window (early
   stopping) and the *test* window (the reported figures).
2. Cut points: a (subject, timestamp) pair where the subject (``u:<user>`` or
   ``s:<session>``) has an event at that time and at least one before it; at most
   ``cuts_per_subject`` per subject and ``max_groups`` per window, sampled with a seed.
3. Nothing at or after a cut's time ``t`` reaches its features: the candidate bundle
   of a window is fitted on every event before the window starts (history for train,
   history + train for valid, … for test) and then, when ``recommend.online_learning``
   is on, learns online every event before ``t`` (in time order, as the serving engine
   learns: the co-visitation of a shopper's session items before a cut is then in the
   features, as it is at serving time), and the shopper's profile has observed exactly
   the shopper's events before ``t``.
4. At a cut, the serving pipeline itself runs: its context stage reads a live session
   loaded from the subject's last events before ``t`` (as a server loads one), its
   candidate stage runs the scene's sources (same code, same ``SCENES``), its blend
   ranks the pool, its rules filter it (purchased, anchors, cart, stock). Scenes:
   ``home``, and ``product_page`` with the latest session item as the page's item,
   drawn at random per cut.
5. Labels: the subject's next ``label_events`` item events at or after ``t`` within
   ``horizon_s``, graded by the strongest event per item (purchase 3, add to cart 2,
   view/click/favorite/rate 1). Items of the live session are not targets unless the
   shopper bought them before (a re-buy is a target) or the scene shows them again
   (its "recently viewed" source has a weight: going back to a viewed item is then
   what the scene serves); the anchors never are, nor items still in the cart unless
   the scene shows them (``merchandising.cart_scenes``). Cuts without any target are
   left out; targets that no source proposed still count in ``n_relevant``.

``evaluate`` orders each group's (filtered) pool by one source alone, by the blend and
by a ranker, and averages NDCG@K / HR@K / Recall@K (binary gains, ``evaluation.metrics``)
over the groups.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl

from shopcast.config import Settings
from shopcast.domain import Event, EventType, Item, User
from shopcast.errors import ValidationError
from shopcast.evaluation.metrics import hit_rate_at_k, ndcg_at_k, recall_at_k
from shopcast.features.live import LiveItemFeatures
from shopcast.features.profile_index import ProfileIndex
from shopcast.models import Interactions, Vocabulary
from shopcast.models._base import FloatArray, IntArray
from shopcast.privacy.consent import declined
from shopcast.serving.catalog import CatalogIndex
from shopcast.serving.pipeline import RecommendPipeline
from shopcast.serving.ranker import (
    SOURCES,
    FeatureBuilder,
    LearnedRanker,
    feature_columns,
)
from shopcast.serving.rules import Ranked
from shopcast.serving.sources import RecommendRequest, Shopper
from shopcast.serving.state import MemorySessions
from shopcast.training.bundle import ModelBundle, make_models

Progress = Callable[[str], None]

#: Graded relevance of the next events (other types are not targets).
GRADES: dict[str, int] = {
    "purchase": 3,
    "add_to_cart": 2,
    "view": 1,
    "click": 1,
    "favorite": 1,
    "rate": 1,
}
WINDOWS = ("train", "valid", "test")


@dataclass(frozen=True, slots=True)
class SplitConfig:
    """How ``build_dataset`` splits the log and samples cut points."""

    fractions: tuple[float, float, float] = (0.5, 0.7, 0.85)
    max_groups: tuple[int, int, int] = (3000, 1000, 2000)
    cuts_per_subject: int = 2
    scenes: tuple[str, ...] = ("home", "product_page")
    label_events: int = 10
    horizon_s: float = 86_400.0
    k: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        a, b, c = self.fractions
        if not 0 < a < b < c < 1:
            raise ValidationError(f"fractions must increase within (0, 1), got {self.fractions}")
        unknown = [s for s in self.scenes if s not in ("home", "product_page")]
        if unknown or not self.scenes:
            raise ValidationError(f"scenes must be home and/or product_page, got {self.scenes}")


@dataclass(slots=True)
class RankingGroups:
    """One window's ranking groups: consecutive rows per group (its filtered pool)."""

    x: FloatArray
    y: IntArray
    sizes: IntArray
    n_relevant: IntArray
    scenes: list[str]

    @property
    def offsets(self) -> IntArray:
        return np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.sizes.shape[0])

    def trainable(self) -> RankingGroups:
        """Only groups with at least one positive row (the others carry no gradient)."""
        off = self.offsets
        keep = [g for g in range(len(self)) if self.sizes[g] and self.y[off[g] : off[g + 1]].any()]
        rows = _rows(off, keep)
        return RankingGroups(
            self.x[rows],
            self.y[rows],
            self.sizes[keep],
            self.n_relevant[keep],
            [self.scenes[g] for g in keep],
        )


def _rows(offsets: IntArray, groups: Sequence[int]) -> IntArray:
    """Row positions of the given groups, in order."""
    if not groups:
        return np.empty(0, np.int64)
    return np.concatenate([np.arange(offsets[g], offsets[g + 1]) for g in groups])


@dataclass(slots=True)
class RankerDataset:
    """The three windows, their columns and what was measured building them."""

    columns: list[str]
    sources: list[str]
    scenes: list[str]
    windows: dict[str, RankingGroups]
    stats: dict[str, Any] = field(default_factory=dict)


def _subject_expr() -> pl.Expr:
    user = pl.col("user_id").cast(pl.String)
    return (
        pl.when(user.is_not_null() & (user != ""))
        .then(pl.lit("u:") + user)
        .otherwise(pl.lit("s:") + pl.col("session_id").cast(pl.String))
    )


class _Codes:
    """A string column as integer codes into its sorted distinct values (null: -1)."""

    def __init__(self, column: pl.Series) -> None:
        self.values: list[str] = column.drop_nulls().unique().sort().to_list()
        rank = column.rank("dense").fill_null(0).to_numpy()
        self.codes = rank.astype(np.int32 if len(self.values) < 2**31 - 1 else np.int64) - 1

    def __getitem__(self, r: int) -> str | None:
        code = int(self.codes[r])
        return None if code < 0 else self.values[code]

    def __len__(self) -> int:
        return int(self.codes.shape[0])


class _Required(_Codes):
    """``_Codes`` of a column without nulls."""

    def __getitem__(self, r: int) -> str:
        return self.values[int(self.codes[r])]


class _SubjectRows(dict[str, IntArray]):
    """Rows of each subject, filled by ``_Log.index_subjects`` (or on a miss)."""

    def __init__(self, log: _Log) -> None:
        super().__init__()
        self._log = log

    def __missing__(self, subject: str) -> IntArray:
        self._log.index_subjects([subject])
        return self[subject]


class _Log:
    """The item events, time-sorted, as plain columns (for fast slicing)."""

    def __init__(self, frame: pl.DataFrame) -> None:
        order = ["ts", "seq"] if "seq" in frame.columns else ["ts"]
        ev = (
            frame.filter(pl.col("item_id").is_not_null() & (pl.col("type") != "impression"))
            .with_columns(_subject_expr().alias("subject"))
            .filter(pl.col("subject").is_not_null())
            .sort(order, maintain_order=True)
        )
        self.frame = ev
        self.ts = ev["ts"].to_numpy().astype(np.float64)
        # Columns read row by row stay compact (codes into distinct values, or polars
        # series): as Python lists, a log of 10M events would take many GB.
        self.item = _Required(ev["item_id"])
        self.type = _Required(ev["type"])
        self.user = _Codes(ev["user_id"])
        self.session = ev["session_id"]
        missing = pl.Series([None] * ev.height, dtype=pl.String)
        self.event_id = ev["event_id"] if "event_id" in ev.columns else missing
        self.price = ev["price"] if "price" in ev.columns else missing
        self.quantity = ev["quantity"] if "quantity" in ev.columns else missing
        self.context = ev["context"] if "context" in ev.columns else missing
        self._events: dict[int, Event] = {}
        self.rows_of = _SubjectRows(self)

    def index_subjects(self, subjects: Iterable[str]) -> None:
        """Find the rows of ``subjects`` in one pass (``rows_of`` would one by one)."""
        wanted = sorted(set(subjects) - self.rows_of.keys())
        if not wanted:
            return
        rows = (
            self.frame.select("subject")
            .with_row_index("row")
            .filter(pl.col("subject").is_in(wanted))
            .group_by("subject", maintain_order=True)
            .agg(pl.col("row"))
        )
        for subject, found in zip(rows["subject"].to_list(), rows["row"].to_list(), strict=True):
            self.rows_of[subject] = np.asarray(found, dtype=np.int64)
        for subject in wanted:
            self.rows_of.setdefault(subject, np.empty(0, np.int64))

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def event(self, r: int) -> Event:
        """The domain event of row ``r`` (trusted values: no validation; cached)."""
        found = self._events.get(r)
        if found is None:
            found = self._events[r] = self._make(r)
        return found

    def _make(self, r: int) -> Event:
        raw = self.context[r]
        context = json.loads(raw) if isinstance(raw, str) and raw else {}
        return Event.model_construct(
            event_id=self.event_id[r] or f"row:{r}",
            type=EventType(self.type[r]),
            user_id=self.user[r],
            session_id=self.session[r],
            item_id=self.item[r],
            timestamp=float(self.ts[r]),
            value=None,
            quantity=self.quantity[r],
            price=self.price[r],
            query=None,
            recommendation_id=None,
            context=context,
        )


def _cuts(log: _Log, bounds: Sequence[float], split: SplitConfig) -> list[tuple[float, str, int]]:
    """``(ts, subject, window)`` cut points, time-sorted (see the module docstring)."""
    ev = pl.DataFrame({"subject": log.frame["subject"], "ts": log.ts})
    first = ev.group_by("subject").agg(pl.col("ts").min().alias("first"))
    cand = (
        ev.filter(pl.col("ts") >= bounds[0])
        .unique(["subject", "ts"], maintain_order=True)
        .join(first, on="subject")
        .filter(pl.col("ts") > pl.col("first"))
        .with_columns(
            pl.when(pl.col("ts") < bounds[1])
            .then(0)
            .when(pl.col("ts") < bounds[2])
            .then(1)
            .otherwise(2)
            .alias("window")
        )
    )
    out: list[tuple[float, str, int]] = []
    for w in range(3):
        part = cand.filter(pl.col("window") == w)
        if part.height == 0:
            continue
        part = part.sample(fraction=1.0, shuffle=True, seed=split.seed + w)
        part = part.group_by("subject", maintain_order=True).head(split.cuts_per_subject)
        part = part.sample(fraction=1.0, shuffle=True, seed=split.seed + 3 + w)
        part = part.head(split.max_groups[w])
        out += [
            (float(t), s, w)
            for s, t in zip(part["subject"].to_list(), part["ts"].to_list(), strict=True)
        ]
    out.sort(key=lambda c: (c[0], c[1]))
    return out


class _Builder:
    """Appends ranking groups of one window."""

    def __init__(self) -> None:
        self.x: list[FloatArray] = []
        self.y: list[IntArray] = []
        self.sizes: list[int] = []
        self.n_relevant: list[int] = []
        self.scenes: list[str] = []

    def add(self, x: FloatArray, y: IntArray, n_relevant: int, scene: str) -> None:
        self.x.append(x)
        self.y.append(y)
        self.sizes.append(x.shape[0])
        self.n_relevant.append(n_relevant)
        self.scenes.append(scene)

    def done(self, width: int) -> RankingGroups:
        return RankingGroups(
            np.concatenate(self.x) if self.x else np.empty((0, width)),
            np.concatenate(self.y).astype(np.int64) if self.y else np.empty(0, np.int64),
            np.asarray(self.sizes, dtype=np.int64),
            np.asarray(self.n_relevant, dtype=np.int64),
            self.scenes,
        )


def _targets(
    log: _Log,
    rows: IntArray,
    t: float,
    shopper: Shopper,
    vocab: Vocabulary,
    split: SplitConfig,
    *,
    reshows_session: bool = False,
    shows_cart: bool = False,
) -> dict[int, int]:
    """Graded targets of a cut: item index -> grade (see the module docstring).
    ``reshows_session``: the scene proposes the live session's items again (the
    "recently viewed" source), so going back to one of them is a target too;
    ``shows_cart``: the scene keeps items still in the cart (``cart_scenes``)."""
    session = set() if reshows_session else set(shopper.context.recent_items.tolist())
    session -= set(shopper.purchases)
    blocked = session | set(shopper.anchors.tolist())
    if not shows_cart:
        blocked |= set(shopper.cart.tolist())
    relevant: dict[int, int] = {}
    for r in rows.tolist():
        grade = GRADES.get(log.type[r], 0)
        if grade == 0 or log.ts[r] >= t + split.horizon_s:
            continue
        idx = vocab.index(log.item[r])
        if idx >= 0 and idx not in blocked:
            relevant[idx] = max(grade, relevant.get(idx, 0))
    return relevant


def without_declined(frame: pl.DataFrame, users: Iterable[User]) -> pl.DataFrame:
    """``frame`` without the events of users who declined personalization: as for the
    personalized models, their events neither train the ranker (cuts, labels) nor
    reach its features (candidate models, profiles, live sessions)."""
    excluded = sorted(declined({u.user_id: u for u in users}))
    if not excluded:
        return frame
    return frame.filter(pl.col("user_id").is_null() | ~pl.col("user_id").is_in(excluded))


def build_dataset(
    frame: pl.DataFrame,
    items: Iterable[Item],
    users: Iterable[User],
    settings: Settings,
    split: SplitConfig | None = None,
    *,
    sources: Sequence[str] = SOURCES,
    progress: Progress | None = None,
) -> RankerDataset:
    """Ranking groups of the train / valid / test windows of an event-log frame
    (``EventLog.frame`` columns); see the module docstring for the protocol."""
    split = split or SplitConfig()
    report = progress or (lambda _stage: None)
    started = time.perf_counter()
    catalog_items = list(items)
    users = list(users)
    frame = without_declined(frame, users)
    log = _Log(frame)
    n = len(log)
    if n < 10:
        raise ValidationError(f"{n} item events are too few for a ranker dataset")
    bounds = [float(log.ts[min(n - 1, int(n * f))]) for f in split.fractions]
    if not bounds[0] < bounds[1] < bounds[2]:
        raise ValidationError("the log spans too little time for three windows")
    history = int(np.searchsorted(log.ts, bounds[0], side="left"))

    vocab = Vocabulary(item.item_id for item in catalog_items)
    catalog = CatalogIndex(vocab)
    catalog.upsert(catalog_items)
    cfg = settings.item_features
    content = LiveItemFeatures(
        text_backend=cfg.text_backend,
        low_stock_threshold=cfg.low_stock_threshold,
        min_group_size=cfg.min_price_group,
    ).rebuild(catalog_items)
    cuts = _cuts(log, bounds, split)
    # Profiles are read at cut points only: those of the cut users are built (a log of
    # millions of shoppers would otherwise hold every one of them in memory).
    log.index_subjects(c[1] for c in cuts)
    cut_users = {c[1][2:] for c in cuts if c[1].startswith("u:")}
    profiles = ProfileIndex(settings)
    profiles.load(
        log.frame.slice(0, history).filter(pl.col("user_id").is_in(sorted(cut_users))),
        catalog_items,
        (u for u in users if u.user_id in cut_users),
        refit=False,
    )
    observed: dict[str, int] = {}  # user subject -> rows of it observed by the profiles

    loaded: list[Event] = []
    sessions = MemorySessions(lambda _s, _n: loaded, length=settings.recommend.session_length)
    rng = np.random.default_rng(split.seed)
    out = [_Builder() for _ in WINDOWS]
    skipped = {"no_target": 0}
    report(f"{len(cuts)} cut points")
    feature_ms: list[float] = []
    pool_sizes: list[int] = []
    width = len(feature_columns(sources))
    for w, name in enumerate(WINDOWS):
        report(f"{name} window: fit the candidate bundle on the events before it")
        start = int(np.searchsorted(log.ts, bounds[w], side="left"))
        data = Interactions.from_frame(log.frame.slice(0, start), items=vocab)
        models = make_models(settings.recommend)
        for model in models.values():
            model.fit(data)
        bundle = ModelBundle(f"ranker-data-{name}", vocab, models)
        pipeline = RecommendPipeline(
            bundle,
            catalog,
            sessions,
            settings.merchandising,
            content=content,
            new_arrival_days=settings.recommend.new_arrival_days,
            recently_viewed_weight=settings.recommend.recently_viewed_weight,
        )
        builder = FeatureBuilder(bundle, catalog, profiles, sources, refresh_s=float("inf"))
        learned = start  # log rows [0, learned) are in the candidate bundle
        for t, subject, _ in (c for c in cuts if c[2] == w):
            if settings.recommend.online_learning:
                upto = int(np.searchsorted(log.ts, t, side="left"))
                if upto > learned:
                    part = log.frame.slice(learned, upto - learned)
                    bundle.learn(Interactions.from_frame(part, users=data.users, items=vocab))
                    learned = upto
            rows = log.rows_of[subject]
            k = int(np.searchsorted(log.ts[rows], t, side="left"))
            if subject.startswith("u:"):  # the profile as of t: its events before t
                done = observed.get(subject, int(np.searchsorted(rows, history)))
                profiles.observe(log.event(int(r)) for r in rows[done:k])
                observed[subject] = max(done, k)
            past = rows[max(0, k - 10 * sessions.length) : k]
            loaded[:] = [log.event(int(r)) for r in past]
            sessions.forget(subject)
            scene = split.scenes[int(rng.integers(len(split.scenes)))]
            anchor = (log.item[int(past[-1])],) if scene == "product_page" else ()
            kind, key = subject.split(":", 1)
            request = RecommendRequest(
                user_id=key if kind == "u" else None,
                session_id=key if kind == "s" else None,
                k=split.k,
                scene=scene,
                items=anchor,
            )
            shopper = pipeline.context(request, t)
            candidates = pipeline.candidates(shopper, request, [])
            blended = pipeline.rank(candidates, request)
            weights = pipeline.scenes[scene]
            relevant = _targets(
                log,
                rows[k : k + split.label_events],
                t,
                shopper,
                vocab,
                split,
                reshows_session=weights.get("recently_viewed", 0.0) > 0,
                shows_cart=scene in settings.merchandising.cart_scenes,
            )
            if not relevant:
                skipped["no_target"] += 1
                continue
            pool = blended.items
            ranked = Ranked(pool, np.zeros(pool.shape[0]), list(blended.sources))
            for rule in pipeline.rules:
                ranked = rule(ranked, shopper, request)
            keep = np.isin(pool, ranked.items)
            clock = time.perf_counter()
            _, x = builder.build(candidates, shopper, request, weights, pool)
            feature_ms.append((time.perf_counter() - clock) * 1000)
            pool_sizes.append(pool.shape[0])
            kept = pool[keep]
            y = np.asarray([relevant.get(i, 0) for i in kept.tolist()], dtype=np.int64)
            out[w].add(x[keep], y, len(relevant), scene)
    windows = {name: b.done(width) for name, b in zip(WINDOWS, out, strict=True)}
    stats: dict[str, Any] = {
        "events": n,
        "history_events": history,
        "bounds_ts": [round(b, 3) for b in bounds],
        "cuts": len(cuts),
        "skipped": skipped,
        "build_s": round(time.perf_counter() - started, 2),
        "pool_p50": int(np.median(pool_sizes)) if pool_sizes else 0,
        "features_ms_p50": round(float(np.median(feature_ms)), 3) if feature_ms else None,
        "features_ms_p99": round(float(np.quantile(feature_ms, 0.99)), 3) if feature_ms else None,
    }
    for name, g in windows.items():
        stats[name] = {
            "groups": len(g),
            "rows": int(g.sizes.sum()),
            "groups_with_target_in_pool": len(g.trainable()),
        }
    return RankerDataset(
        feature_columns(sources), list(sources), list(split.scenes), windows, stats
    )


def train_ranker(dataset: RankerDataset, ranker: LearnedRanker | None = None) -> LearnedRanker:
    """Fit a ``LearnedRanker`` on the train window, early-stopped on the valid window."""
    model = ranker or LearnedRanker()
    train = dataset.windows["train"].trainable()
    valid = dataset.windows["valid"].trainable()
    if len(train) == 0:
        raise ValidationError("no training group has a target among its candidates")
    return model.fit_groups(
        train.x,
        train.y,
        train.sizes,
        columns=dataset.columns,
        sources=dataset.sources,
        scenes=dataset.scenes,
        valid=(valid.x, valid.y, valid.sizes) if len(valid) else None,
    )


def _top(scores: FloatArray, k: int, valid: np.ndarray[Any, Any] | None = None) -> IntArray:
    """Positions of the ``k`` best scores (stable), padded with -1."""
    pos = np.arange(scores.shape[0])
    if valid is not None:
        pos = pos[valid]
    order = pos[np.argsort(-scores[pos], kind="stable")][:k]
    return np.concatenate([order, np.full(k - order.shape[0], -1)]).astype(np.int64)


def _hits(
    groups: RankingGroups,
    columns: Sequence[str],
    sources: Sequence[str],
    ranker: LearnedRanker | None,
    k: int,
) -> dict[str, np.ndarray[Any, Any]]:
    """Per method, ``hits[g, r]``: is the item at rank ``r`` of group ``g`` a target?"""
    col = {name: j for j, name in enumerate(columns)}
    raw = ranker.predict(groups.x) if ranker is not None and groups.x.shape[0] else None
    methods = [*sources, "blend", *(["ranker"] if ranker is not None else [])]
    hits = {m: np.zeros((len(groups), k), dtype=bool) for m in methods}
    off = groups.offsets
    for g in range(len(groups)):
        a, b = int(off[g]), int(off[g + 1])
        x, y = groups.x[a:b], groups.y[a:b]
        for m in methods:
            if m == "blend":
                top = _top(x[:, col["blend"]], k)
            elif m == "ranker":
                assert raw is not None
                top = _top(raw[a:b], k)
            else:
                rank = x[:, col[f"rank_{m}"]]
                top = _top(-rank, k, rank > 0)
            ok = top >= 0
            hits[m][g, ok] = y[top[ok]] > 0
    return hits


def ndcg_per_group(
    groups: RankingGroups,
    columns: Sequence[str],
    sources: Sequence[str],
    ranker: LearnedRanker | None = None,
    *,
    k: int = 10,
) -> dict[str, FloatArray]:
    """NDCG@k of every group, per method (for paired comparisons)."""
    hits = _hits(groups, columns, sources, ranker, k)
    return {m: ndcg_at_k(h, groups.n_relevant, k) for m, h in hits.items()}


def evaluate(
    groups: RankingGroups,
    columns: Sequence[str],
    sources: Sequence[str],
    ranker: LearnedRanker | None = None,
    *,
    k: int = 10,
) -> dict[str, dict[str, float]]:
    """NDCG@k / HR@k / Recall@k of every single source, the blend and the ranker."""
    hits = _hits(groups, columns, sources, ranker, k)
    n_rel = groups.n_relevant
    out: dict[str, dict[str, float]] = {}
    for m, h in hits.items():
        if not len(groups):
            out[m] = {f"ndcg@{k}": 0.0, f"hr@{k}": 0.0, f"recall@{k}": 0.0}
            continue
        out[m] = {
            f"ndcg@{k}": round(float(ndcg_at_k(h, n_rel, k).mean()), 4),
            f"hr@{k}": round(float(hit_rate_at_k(h, k).mean()), 4),
            f"recall@{k}": round(float(recall_at_k(h, n_rel, k).mean()), 4),
        }
    return out


def by_scene(groups: RankingGroups, scene: str) -> RankingGroups:
    """The groups of one scene."""
    off = groups.offsets
    keep = [g for g in range(len(groups)) if groups.scenes[g] == scene]
    rows = _rows(off, keep)
    return replace(
        groups,
        x=groups.x[rows],
        y=groups.y[rows],
        sizes=groups.sizes[keep],
        n_relevant=groups.n_relevant[keep],
        scenes=[scene] * len(keep),
    )


def summary(metrics: Mapping[str, Mapping[str, float]], k: int = 10) -> dict[str, Any]:
    """The best single source and the ranker's relative NDCG gain over it and the blend."""
    key = f"ndcg@{k}"
    singles = {m: v[key] for m, v in metrics.items() if m not in ("blend", "ranker")}
    best = max(singles, key=lambda m: singles[m]) if singles else None
    out: dict[str, Any] = {"best_source": best}
    if "ranker" in metrics:
        r = metrics["ranker"][key]
        for label, base in (
            ("best_source", singles.get(best or "", 0.0)),
            ("blend", None),
        ):
            ref = metrics["blend"][key] if base is None else base
            out[f"gain_vs_{label}"] = round(r / ref - 1.0, 4) if ref > 0 else None
    return out


#: ``train_bundle`` trains a ranker on its own (``ranker=None``) from this many item events.
MIN_EVENTS = 20_000
#: The split ``attach_ranker`` uses by default: fewer groups than the benchmark's, so
#: that ``shopcast train`` stays within a few minutes on two cores.
TRAIN_SPLIT = SplitConfig(max_groups=(1500, 500, 1000))


def attach_ranker(
    bundle: ModelBundle,
    frame: pl.DataFrame,
    items: Iterable[Item],
    users: Iterable[User],
    settings: Settings,
    *,
    required: bool = False,
    split: SplitConfig | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train a ranker on the log and add it to ``bundle`` as role ``ranker``.

    Not ``required`` (automatic mode): skipped below ``MIN_EVENTS`` item events, and
    the ranker is kept only when its test-window NDCG@10 is at least the blend's.
    Returns what happened (also stored in ``bundle.stats["ranker"]``).
    """
    report = progress or (lambda _stage: None)
    users = list(users)
    frame = without_declined(frame, users)
    n = frame.filter(pl.col("item_id").is_not_null()).height
    info: dict[str, Any] = {"events": n}
    if not required and n < MIN_EVENTS:
        info["skipped"] = f"fewer than {MIN_EVENTS} item events"
    else:
        started = time.perf_counter()
        report("ranker: build ranking groups")
        dataset = build_dataset(
            frame, items, users, settings, split or TRAIN_SPLIT, progress=report
        )
        report("ranker: fit LambdaRank")
        model = train_ranker(dataset)
        test = evaluate(dataset.windows["test"], dataset.columns, dataset.sources, model)
        model.metrics_.update({"test": test, **summary(test), "data": dataset.stats})
        info.update(
            {
                "test_ndcg@10": {m: test[m]["ndcg@10"] for m in test},
                **summary(test),
                "train_s": round(time.perf_counter() - started, 2),
            }
        )
        if required or test["ranker"]["ndcg@10"] >= test["blend"]["ndcg@10"]:
            bundle.models["ranker"] = model
            info["kept"] = True
        else:
            info["kept"] = False
            info["skipped"] = "the ranker did not beat the blend on the test window"
    bundle.stats["ranker"] = info
    return info


__all__ = [
    "GRADES",
    "MIN_EVENTS",
    "RankerDataset",
    "RankingGroups",
    "SplitConfig",
    "attach_ranker",
    "build_dataset",
    "by_scene",
    "evaluate",
    "feature_columns",
    "ndcg_per_group",
    "summary",
    "train_ranker",
    "without_declined",
]
