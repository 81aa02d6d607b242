"""Learned ranking of the candidate pool: candidate features and a LambdaRank model.

``FeatureBuilder.build`` turns the pool of one request (the union of the scene's
candidate sources) into a float matrix, one row per candidate, columns
``feature_columns(sources)`` in this order (NaN = unknown; LightGBM routes it):

=======================  =====================================================================
column                   meaning
=======================  =====================================================================
score_<source>           the source's score / its best score in this request (as in the
                         blend, before the scene weight); 0 when it did not propose the item
rank_<source>            1-based position in the source's list by score; 0 when absent
blend                    the hand-tuned blend: Σ scene weight · score_<source>
n_sources                how many sources proposed the item
pop_log                  ln(1 + time-decayed popularity) (the bundle's ``popularity``, live)
price_log                ln(1 + price); 0 when unknown (``ItemFeatures.matrix``)
price_z                  price z-score within the item's category price group (clipped ±5)
price_pct                price percentile within that group (0.5 when unknown)
discount                 discount % / 100
stock                    2 in stock, 1 low stock, 0 out of stock, NaN untracked
days_since_created       (now − created_at) / 1 day; NaN when unknown
aff_category             the shopper's affinity share of the item's full category path
aff_category_top         … of its top-level category
aff_brand                … of its brand
price_vs_user            ln(price / the shopper's median cart/purchase price); NaN unknown
user_events_30d          the shopper's events in the last 30 days (NaN: no profile)
lifecycle                0 new, 1 active, 2 at risk, 3 churned; NaN without a profile
user_purchases           purchase events of the shopper (NaN without a profile)
scene                    code of the scene (``SCENE_CODES``)
session_items            events in the live session (what the context stage read)
same_category            1 when the item's leaf category is the latest anchor/session
                         item's, else 0
since_last_event_s       seconds since the shopper's latest event (NaN: none)
=======================  =====================================================================

User features read the shopper's ``UserState`` (``features/profiles.py``) straight from
the profile index, not the readable profile (cheap: dictionary look-ups for the pool's
categories and brands). Item features are arrays over the item vocabulary, built from
the catalog once and rebuilt on a background thread when the catalog changed (at most
every ``refresh_s``); items newer than the arrays read as unknown until then.

``LearnedRanker`` is LightGBM ``lambdarank`` over those columns, saved as LightGBM's
text model (``model.txt``) + ``meta.json`` (columns in order, sources, scenes, metrics):
no pickle. ``RankStage`` is what the pipeline's ``rank`` stage calls. Training data:
``shopcast.training.ranker_data``.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

import numpy as np

from shopcast.errors import ModelError, NotFittedError
from shopcast.features._itemref import SEP
from shopcast.features.profiles import DAY, ProfileParams, UserState, lifecycle_of
from shopcast.models._base import BoolArray, Context, FloatArray, IntArray, Interactions, Vocabulary

if TYPE_CHECKING:
    from shopcast.serving.catalog import CatalogIndex
    from shopcast.serving.compiled import CompiledTrees
    from shopcast.serving.rules import Ranked
    from shopcast.serving.sources import RecommendRequest, Shopper
    from shopcast.training.bundle import ModelBundle

__all__ = [
    "SOURCES",
    "FeatureBuilder",
    "LearnedRanker",
    "RankStage",
    "UserStates",
    "feature_columns",
]

log = logging.getLogger(__name__)

#: The candidate sources a ranker has columns for, by default (every scene's sources).
SOURCES: tuple[str, ...] = (
    "covisit",
    "bought_together",
    "recently_viewed",
    "buy_again",
    "new_arrivals",
    "category_popular",
    "popular",
)
SCENE_CODES: dict[str, int] = {
    "home": 0,
    "product_page": 1,
    "cart": 2,
    "post_purchase": 3,
    "search": 4,
    "bought_together": 5,
    "trending": 6,
}
LIFECYCLE_CODES = {"new": 0.0, "active": 1.0, "at_risk": 2.0, "churned": 3.0}
ITEM_COLUMNS = (
    "pop_log",
    "price_log",
    "price_z",
    "price_pct",
    "discount",
    "stock",
    "days_since_created",
)
USER_COLUMNS = (
    "aff_category",
    "aff_category_top",
    "aff_brand",
    "price_vs_user",
    "user_events_30d",
    "lifecycle",
    "user_purchases",
)
CONTEXT_COLUMNS = ("scene", "session_items", "same_category", "since_last_event_s")
#: Columns of ``ItemFeatures.matrix`` copied as they are.
_MATRIX_COLUMNS = ("price_log", "price_z", "price_pct", "discount")
#: Serve the ranker through compiled trees (``compiled.py``, lleaves) when installed.
COMPILE = True
MODEL_FILE = "model.txt"
META_FILE = "meta.json"
FORMAT_VERSION = 1


def feature_columns(sources: Sequence[str] = SOURCES) -> list[str]:
    """The feature columns, in matrix order, for a ranker over ``sources``."""
    return [
        *(f"score_{s}" for s in sources),
        *(f"rank_{s}" for s in sources),
        "blend",
        "n_sources",
        *ITEM_COLUMNS,
        *USER_COLUMNS,
        *CONTEXT_COLUMNS,
    ]


class Scored(Protocol):
    """A source's output: items and scores (``Candidates`` or ``Ranked``)."""

    @property
    def items(self) -> IntArray: ...

    @property
    def scores(self) -> FloatArray: ...


class UserStates(Protocol):
    """Where user profile states are read (``ProfileIndex`` is one)."""

    states: dict[str, UserState]
    params: ProfileParams


# -- item arrays -----------------------------------------------------------------------


class _ItemArrays:
    """Per-vocabulary-index item features (built from the catalog)."""

    def __init__(self, catalog: CatalogIndex) -> None:
        from shopcast.features.items import ItemFeatures

        vocab = catalog.vocab
        n = len(vocab)
        items = [catalog.get(i) for i in range(n)]
        present = [item for item in items if item is not None]
        self.size = n
        self.static = np.full((n, len(_MATRIX_COLUMNS) + 1), np.nan)  # + stock
        if present:
            features = ItemFeatures().fit(present)
            matrix = features.matrix(present, vocab)
            col = {name: j for j, name in enumerate(features.columns_)}
            for j, name in enumerate(_MATRIX_COLUMNS):
                self.static[:, j] = matrix[:, col[name]]
            stock = np.full(n, np.nan)
            stock[matrix[:, col["stock_in"]] > 0] = 2.0
            stock[matrix[:, col["stock_low"]] > 0] = 1.0
            stock[matrix[:, col["stock_out"]] > 0] = 0.0
            self.static[:, -1] = stock
        self.created = np.full(n, np.nan)
        self.price = np.full(n, np.nan)
        self.leaf = np.full(n, -1, np.int64)
        self.top = np.full(n, -1, np.int64)
        self.brand = np.full(n, -1, np.int64)
        codes: dict[str, int] = {}
        brands: dict[str, int] = {}
        for idx, item in enumerate(items):
            if item is None:
                continue
            if item.created_at:
                self.created[idx] = item.created_at
            if item.price is not None:
                self.price[idx] = item.price
            if item.category:
                self.leaf[idx] = codes.setdefault(SEP.join(item.category), len(codes))
                self.top[idx] = codes.setdefault(item.category[0], len(codes))
            if item.brand is not None:
                self.brand[idx] = brands.setdefault(item.brand, len(brands))
        self.category_keys = list(codes)
        self.brand_keys = list(brands)

    def rows(self, pool: IntArray) -> tuple[IntArray, BoolArray]:
        """Positions into the arrays and a mask of the pool items they cover."""
        inside = (pool >= 0) & (pool < self.size)
        return np.where(inside, pool, 0), inside


def _lookup(
    codes: IntArray, keys: list[str], table: Mapping[str, float], total: float
) -> FloatArray:
    """``table[keys[code]] / total`` per code (0 for -1 or a key not in the table)."""
    if total <= 0 or not table:
        return np.zeros(codes.shape[0])
    uniq, inverse = np.unique(codes, return_inverse=True)
    get = table.get
    values = np.fromiter(
        ((get(keys[c], 0.0) if c >= 0 else 0.0) for c in uniq.tolist()), np.float64, uniq.size
    )
    return values[inverse] / total


class FeatureBuilder:
    """Candidate features of one request, vectorized over the pool."""

    def __init__(
        self,
        bundle: ModelBundle,
        catalog: CatalogIndex,
        profiles: UserStates | None = None,
        sources: Sequence[str] = SOURCES,
        *,
        refresh_s: float = 60.0,
    ) -> None:
        self.bundle = bundle
        self.catalog = catalog
        self.profiles = profiles
        self.sources = list(sources)
        self.columns = feature_columns(self.sources)
        self._column = {name: j for j, name in enumerate(self.sources)}
        self.refresh_s = refresh_s
        self._items = _ItemArrays(catalog)
        self._revision = catalog.revision
        self._built = time.monotonic()
        self._job: threading.Thread | None = None

    def _arrays(self) -> _ItemArrays:
        """The item arrays; a changed catalog starts a rebuild on a background thread
        (at most every ``refresh_s``) and requests use the previous arrays meanwhile."""
        stale = self.catalog.revision != self._revision or len(self.catalog.vocab) > (
            self._items.size
        )
        if stale and time.monotonic() - self._built >= self.refresh_s and self._job is None:
            self._job = threading.Thread(target=self.refresh, name="ranker-items", daemon=True)
            self._job.start()
        return self._items

    def refresh(self) -> None:
        """Rebuild the item arrays from the catalog now (in the calling thread)."""
        try:
            revision = self.catalog.revision
            self._items = _ItemArrays(self.catalog)
            self._revision = revision
        except Exception:  # keep serving the previous arrays
            log.exception("rebuilding the ranker's item features failed")
        finally:
            self._built = time.monotonic()
            self._job = None

    def build(
        self,
        candidates: Mapping[str, Scored],
        shopper: Shopper,
        request: RecommendRequest,
        weights: Mapping[str, float],
        pool: IntArray | None = None,
    ) -> tuple[IntArray, FloatArray]:
        """``(pool, features)``: the pool (sorted union of the candidates unless given)
        and one row of ``self.columns`` per pool item."""
        if pool is None:
            lists = [c.items for c in candidates.values()]
            pool = np.unique(np.concatenate(lists)) if lists else np.empty(0, np.int64)
        n, n_src = pool.shape[0], len(self.sources)
        out = np.zeros((n, len(self.columns)))
        if n == 0:
            return pool, out
        column = self._column
        blend = out[:, 2 * n_src]
        for name, found in candidates.items():
            j, weight = column.get(name), weights.get(name, 0.0)
            m = found.items.shape[0]
            if not m or (j is None and not weight):
                continue
            top = float(found.scores.max())
            scaled = found.scores / top if top > 0 else np.zeros(m)
            at = np.searchsorted(pool, found.items)
            ok = at < n
            ok[ok] &= pool[at[ok]] == found.items[ok]
            at, scaled = at[ok], scaled[ok]
            if weight:
                blend[at] += weight * scaled  # a source proposes an item once
            if j is not None:
                ranks = np.empty(m)
                ranks[np.argsort(-found.scores, kind="stable")] = np.arange(1.0, m + 1.0)
                out[at, j] = scaled
                out[at, n_src + j] = ranks[ok]
        c = 2 * n_src
        out[:, c + 1] = np.count_nonzero(out[:, n_src : 2 * n_src], axis=1)
        c += 2
        items = self._arrays()
        rows, inside = items.rows(pool)
        ctx = shopper.context
        now = ctx.now
        popularity = self.bundle.popularity.scores_
        pop = np.zeros(n)
        known = (pool >= 0) & (pool < popularity.shape[0])
        pop[known] = popularity[pool[known]]
        out[:, c] = np.log1p(np.maximum(pop, 0.0))
        static = np.where(inside[:, None], items.static[rows], np.nan)
        out[:, c + 1 : c + 6] = static
        created = np.where(inside, items.created[rows], np.nan)
        out[:, c + 6] = (now - created) / DAY
        c += len(ITEM_COLUMNS)
        leaf = np.where(inside, items.leaf[rows], -1)
        top_cat = np.where(inside, items.top[rows], -1)
        brand = np.where(inside, items.brand[rows], -1)
        price = np.where(inside, items.price[rows], np.nan)
        state = self._state(request)
        if state is not None and self.profiles is not None:
            cats, total = state.categories, state.category_total
            out[:, c] = _lookup(leaf, items.category_keys, cats, total)
            out[:, c + 1] = _lookup(top_cat, items.category_keys, cats, total)
            out[:, c + 2] = _lookup(brand, items.brand_keys, state.brands, state.brand_total)
            median = _median(state.prices)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.log(price / median) if median and median > 0 else np.full(n, np.nan)
            out[:, c + 3] = np.where(np.isfinite(ratio), ratio, np.nan)
            window = state.window
            out[:, c + 4] = len(window) - _bisect(window, now - 30 * DAY)
            since_first = (now - state.first_ts) / DAY
            since_last = (now - state.last_ts) / DAY
            out[:, c + 5] = LIFECYCLE_CODES[
                lifecycle_of(since_first, since_last, self.profiles.params)
            ]
            out[:, c + 6] = state.purchases
        else:
            out[:, c + 3 : c + 7] = np.nan
        c += len(USER_COLUMNS)
        out[:, c] = SCENE_CODES.get(request.scene, -1)
        out[:, c + 1] = ctx.recent_items.shape[0]
        basis = shopper.anchors[::-1] if shopper.anchors.size else ctx.recent_items
        latest = -1
        for idx in basis[::-1].tolist():
            if 0 <= idx < items.size and items.leaf[idx] >= 0:
                latest = int(items.leaf[idx])
                break
        out[:, c + 2] = (leaf == latest) & (latest >= 0)
        out[:, c + 3] = now - float(ctx.recent_ts.max()) if ctx.recent_ts.size else np.nan
        return pool, out

    def _state(self, request: RecommendRequest) -> UserState | None:
        if self.profiles is None or request.user_id is None:
            return None
        state = self.profiles.states.get(request.user_id)
        return state if state is not None and state.events else None


def _median(values: Sequence[float]) -> float | None:
    n = len(values)
    if not n:
        return None
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2.0


def _bisect(values: Sequence[float], x: float) -> int:
    return bisect.bisect_left(values, x)


# -- the model -------------------------------------------------------------------------


def _lightgbm() -> Any:
    try:
        import lightgbm
    except ImportError:  # pragma: no cover - lightgbm is a core dependency
        raise ModelError("the learned ranker needs LightGBM (a core dependency)") from None
    return lightgbm


class LearnedRanker:
    """LightGBM LambdaRank over candidate features (higher score = show earlier).

    Fitted with ``fit_groups`` on ranking groups (one per shopper and cut point) with
    graded labels (0 = not interacted … 3 = purchased); early stopping on a validation
    set's NDCG@10. ``fit`` / ``score`` of the ``Recommender`` protocol do not apply (it
    ranks candidate features, not a context); only ``save`` / ``load`` are shared, so
    a bundle can hold it under the role ``ranker``.

    Learned state: ``booster_`` (LightGBM), ``columns_``, ``sources_``, ``scenes_``
    (the scenes it was trained on and serves), ``metrics_``.
    """

    name: ClassVar[str] = "learned_ranker"

    booster_: Any
    #: The booster compiled (``compiled.py``), set by ``compile``; None: LightGBM.
    fast_: CompiledTrees | None = None
    columns_: list[str]
    sources_: list[str]
    scenes_: list[str]
    metrics_: dict[str, Any]

    def __init__(
        self,
        n_estimators: int = 400,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 50,
        feature_fraction: float = 0.8,
        early_stopping_rounds: int = 40,
        seed: int = 0,
        threads: int = 1,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.early_stopping_rounds = early_stopping_rounds
        self.seed = seed
        self.threads = threads

    def params(self) -> dict[str, Any]:
        return {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "early_stopping_rounds": self.early_stopping_rounds,
            "seed": self.seed,
            "threads": self.threads,
        }

    def fit_groups(
        self,
        x: FloatArray,
        y: IntArray,
        groups: IntArray,
        *,
        columns: Sequence[str],
        sources: Sequence[str] = SOURCES,
        scenes: Sequence[str] = ("home",),
        valid: tuple[FloatArray, IntArray, IntArray] | None = None,
    ) -> Self:
        """Fit on rows ``x`` (``columns``), labels ``y`` and group sizes ``groups``
        (rows of one group are consecutive); ``valid`` enables early stopping."""
        lgb = _lightgbm()
        if list(columns) != feature_columns(sources):
            raise ModelError("columns do not match feature_columns(sources)")
        params = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "bagging_seed": self.seed,
            "feature_fraction_seed": self.seed,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": self.threads,
            "verbose": -1,
        }
        train = lgb.Dataset(x, label=y, group=groups, feature_name=list(columns))
        sets, callbacks = [], []
        if valid is not None:
            vx, vy, vg = valid
            sets = [lgb.Dataset(vx, label=vy, group=vg, reference=train)]
            callbacks = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
        booster = lgb.train(
            params, train, num_boost_round=self.n_estimators, valid_sets=sets, callbacks=callbacks
        )
        if valid is not None and booster.best_iteration > 0:  # keep the best trees only
            text = booster.model_to_string(num_iteration=booster.best_iteration)
            booster = lgb.Booster(model_str=text)
        self.booster_ = booster
        self.fast_ = None
        self.columns_ = list(columns)
        self.sources_ = list(sources)
        self.scenes_ = list(scenes)
        self.metrics_ = {"trees": int(booster.num_trees())}
        return self

    def predict(self, x: FloatArray) -> FloatArray:
        """One score per row of ``x`` (columns ``columns_``)."""
        if not hasattr(self, "booster_"):
            raise NotFittedError("LearnedRanker is not fitted; call fit_groups() first")
        if x.shape[0] == 0:
            return np.empty(0)
        fast = self.fast_
        if fast is not None:
            try:
                return fast.predict(x)
            except Exception:  # never worse than LightGBM: fall back for good
                log.exception("compiled ranker failed; predicting with LightGBM")
                self.fast_ = None
        return np.asarray(self.booster_.predict(x, num_threads=1), dtype=np.float64)

    def compile(self) -> bool:
        """Predict through compiled trees from now on (``compiled.compile_booster``:
        lleaves, checked against LightGBM); False when unavailable (LightGBM stays)."""
        if not hasattr(self, "booster_"):
            raise NotFittedError("LearnedRanker is not fitted; call fit_groups() first")
        if self.fast_ is None:
            from shopcast.serving.compiled import compile_booster

            self.fast_ = compile_booster(self.booster_)
        return self.fast_ is not None

    def importance(self) -> dict[str, float]:
        """Total gain per feature column, largest first."""
        gains = self.booster_.feature_importance(importance_type="gain")
        pairs = sorted(zip(self.columns_, gains.tolist(), strict=True), key=lambda p: -p[1])
        return {k: round(float(v), 3) for k, v in pairs}

    # Recommender protocol: the ranker scores candidate features, not a context.
    def fit(self, data: Interactions) -> Self:
        raise ModelError("a LearnedRanker is fitted with fit_groups (see training.ranker_data)")

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        raise ModelError("a LearnedRanker scores candidate features: use predict or RankStage")

    def save(self, path: Path) -> None:
        if not hasattr(self, "booster_"):
            raise NotFittedError("LearnedRanker is not fitted; call fit_groups() first")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / MODEL_FILE).write_text(self.booster_.model_to_string())
        meta = {
            "model": self.name,
            "format": FORMAT_VERSION,
            "params": self.params(),
            "columns": self.columns_,
            "sources": self.sources_,
            "scenes": self.scenes_,
            "metrics": self.metrics_,
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path, items: Vocabulary | None = None) -> Self:
        """Read ``model.txt`` + ``meta.json`` (``items`` is unused: no item state)."""
        path = Path(path)
        try:
            meta = json.loads((path / META_FILE).read_text())
            text = (path / MODEL_FILE).read_text()
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read a saved ranker at {path}: {exc}") from None
        if meta.get("model") != cls.name or meta.get("format") != FORMAT_VERSION:
            raise ModelError(f"{path} does not hold a {cls.name} (format {FORMAT_VERSION})")
        model = cls(**meta["params"])
        try:
            model.booster_ = _lightgbm().Booster(model_str=text)
            model.fast_ = None
        except Exception as exc:  # LightGBM raises its own LightGBMError
            raise ModelError(f"cannot parse the ranker model at {path}: {exc}") from None
        model.columns_ = list(meta["columns"])
        model.sources_ = list(meta["sources"])
        model.scenes_ = list(meta["scenes"])
        model.metrics_ = dict(meta.get("metrics", {}))
        if model.columns_ != feature_columns(model.sources_):
            raise ModelError(f"{path}: its columns are not this version's feature columns")
        return model


# -- the pipeline stage ----------------------------------------------------------------


class RankStage:
    """Scores the pool with a ``LearnedRanker``; scores are ``sigmoid(raw)`` so that
    they stay positive for the multiplicative boosts downstream."""

    def __init__(
        self,
        ranker: LearnedRanker,
        bundle: ModelBundle,
        catalog: CatalogIndex,
        profiles: UserStates | None = None,
    ) -> None:
        self.ranker = ranker
        self.features = FeatureBuilder(bundle, catalog, profiles, ranker.sources_)
        if self.features.columns != ranker.columns_:
            raise ModelError("the ranker's feature columns differ from the builder's")
        if COMPILE and hasattr(ranker, "booster_"):  # when a bundle is put in service
            ranker.compile()

    def serves(self, scene: str) -> bool:
        return scene in self.ranker.scenes_

    def __call__(
        self,
        candidates: Mapping[str, Scored],
        blended: Ranked,
        shopper: Shopper,
        request: RecommendRequest,
        weights: Mapping[str, float],
    ) -> Ranked:
        """The blended pool (same items and credited sources) with the ranker's scores."""
        from shopcast.serving.rules import Ranked

        pool, x = self.features.build(candidates, shopper, request, weights, blended.items)
        raw = self.ranker.predict(x)
        return Ranked(pool, 1.0 / (1.0 + np.exp(-raw)), blended.sources)
