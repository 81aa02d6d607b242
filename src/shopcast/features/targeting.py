"""Targeting (users-to-item): who is most likely to respond to an item, a category or
brand, or a promotion text; every user scored at once, ranked, explained.

**Target.** A query is resolved into a weighted item set ``T`` (``w_t``, Σ = 1), category
keys ``q_k`` and brands ``q_b``:

- ``item_id``: ``T`` = the item; ``q`` = each level of its category path (1/depth each)
  and its brand;
- ``category`` and/or ``brand``: the items in that category (a full key ``"A > B"`` or a
  level name, case-insensitive) and/or of that brand; the ``max_target_items`` most
  popular (decayed event weight), ``w_t`` ∝ popularity + 1 % (unseen items count a
  little); ``q`` = the matched keys / the brand, equal shares;
- ``text``: the ``text_items`` catalog items closest to the text by the content encoder
  (TF-IDF by default; ``ContentSimilarity.scores_for``), score ≥ max(``text_min_score``,
  half the best), ``w_t`` ∝ score; ``q`` = their category levels and brands weighted by
  ``w_t``.

**Signals.** ``W[u, i]`` = Σ over ``u``'s events on ``i`` of ``event_weight(type) ·
2^(-(now − t) / half_life)`` (the profiles' event weights; ``half_life_days`` 90, longer
than the profiles' 30: a shopper who bought months ago still responds, and it measured
better on the validation month), built from the event log (``fit`` / ``update``). For
each user with at least one event:

==================  ========================================================================
signal              value ``s`` in [0, 1]
==================  ========================================================================
item                ``1 − exp(−x / item_scale)``, ``x = Σ_t w_t W[u, t]``: the user's own
                    views, carts and purchases of the target items
bought_together     ``1 − exp(−x / relation_scale)``, ``x = Σ_h W[u, h] · R(h)``,
covisit             ``R(h) = Σ_t w_t N_t(h)``: ``N_t`` is the model's neighbour row of
similar             ``t`` divided by its maximum (``CoVisitation.neighbors``; for
                    ``similar``, content neighbours), over the ``relation_targets``
                    heaviest ``t`` (``w`` renormalized), target items themselves left out
category            ``Σ_k q_k share_u(k) · (1 − exp(−c_u / affinity_scale))``;
                    ``share_u(k)`` = ``W``-weight of ``u``'s events on items in ``k`` /
                    ``c_u``, the ``W``-weight on items with any category: the profile's
                    share definition (``ProfileIndex.affinities``, equal with the same
                    half-life), read with today's catalog and
                    shrunk when it rests on little evidence (one view: × 0.1)
brand               ``Σ_b q_b share_u(b) · (1 − exp(−c_u / affinity_scale))``, the same
                    over brands
price               ``exp(−(ln p_T − ln g_u)² / (2 ln(2)²))``: ``p_T`` the target's
                    (``w``-weighted geometric mean) price, ``g_u`` the geometric mean price
                    of ``u``'s carted and bought items (event price, else catalog price);
                    0 when either is unknown (a factor 2 off gives 0.61)
activity            ``1 − exp(−Σ_i W[u, i] / activity_scale)``: recent, frequent shoppers
==================  ========================================================================

``score(u) = Σ weight_signal · s_signal(u)`` (``TargetingWeights``); the response lists
each weighted term (``signals``) and the ``reason`` is the phrase of the largest one
("viewed X, often bought with Y", "loves Camping (32% of activity)", "bought Acme 4
times"). Ties: the user first seen earlier ranks first. The default weights were
chosen on a validation month of Online Retail, not on the month the benchmark reports
(``bench/bench_targeting.py``).

**Eligible users**: at least one event; consent to personalization (``User.consent
["personalization"]`` is not False); ``filters.consent`` purposes explicitly True; the
filters (segment members given by the caller, lifecycle stage with the profiles'
thresholds, region, price sensitivity = the profile's ``discount_share``, users without
purchases fail a bound); with ``exclude_buyers`` and an item target, never bought the
item. Users scoring 0 are not returned.

**State.** ``fit(frame, items, users)`` builds the sparse matrices from an event-log
frame; ``update(frame)`` adds newer events (the caller passes ``frame(after_seq=seq_)``),
so both paths give the same matrices; ``upsert_items`` / ``upsert_users`` / ``forget``
keep the catalog and the user records current. Weights are stored relative to
``t_ref_`` and scaled to ``now`` at query time. Not thread-safe: callers serialize.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Literal, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import BaseModel, Field

from shopcast.config import RecommendSettings, Settings
from shopcast.domain import EventType, Item, User, split_category
from shopcast.errors import ConfigError, NotFoundError
from shopcast.features._itemref import SEP, category_keys
from shopcast.features.profiles import DAY, LIFECYCLES, ProfileParams, consents
from shopcast.features.similarity import ContentSimilarity
from shopcast.models._base import BoolArray, FloatArray, IntArray, Vocabulary
from shopcast.models.covisit import CoVisitation

SIGNALS: tuple[str, ...] = (
    "item",
    "bought_together",
    "covisit",
    "similar",
    "category",
    "brand",
    "price",
    "activity",
)
RELATIONS: tuple[str, ...] = ("bought_together", "covisit", "similar")
#: ``t_ref_`` moves forward once events are this many half-lives newer (no overflow).
REBASE_HALF_LIVES = 16.0
PRICE_TOLERANCE = math.log(2.0)

#: ``(item_id, k) -> [(neighbour id, weight in [0, 1])]``, best first.
Neighbours = Callable[[str, int], Sequence[tuple[str, float]]]
TargetKind = Literal["item", "category", "brand", "category+brand", "text"]


@dataclass(frozen=True, slots=True)
class TargetingWeights:
    """Blend weights of the signals and the scales of the saturating transforms."""

    item: float = 2.0
    bought_together: float = 1.0
    covisit: float = 0.6
    similar: float = 0.6
    category: float = 0.25
    brand: float = 0.4
    price: float = 0.1
    activity: float = 0.3
    item_scale: float = 5.0
    relation_scale: float = 10.0
    activity_scale: float = 50.0
    affinity_scale: float = 10.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            ok = value > 0 if f.name.endswith("_scale") else value >= 0
            if not ok:
                raise ConfigError(f"targeting weight {f.name} must be >= 0 (scales > 0)")

    def of(self, signal: str) -> float:
        value: float = getattr(self, signal)
        return value

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class TargetFilters:
    """Who may be targeted (see the module docstring)."""

    lifecycle: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    min_price_sensitivity: float | None = None
    max_price_sensitivity: float | None = None
    consent: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TargetingQuery:
    """One of ``item_id`` / ``text``, or ``category`` and/or ``brand``."""

    item_id: str | None = None
    category: str | None = None
    brand: str | None = None
    text: str | None = None
    limit: int = 100
    exclude_buyers: bool = True
    filters: TargetFilters = field(default_factory=TargetFilters)


# -- the answer --------------------------------------------------------------------------


class TargetItem(BaseModel):
    item_id: str
    title: str | None = None
    weight: float = Field(description="Share of the target carried by this item")


class TargetSummary(BaseModel):
    kind: TargetKind
    label: str = Field(description="How reasons name the target")
    items: list[TargetItem] = Field(description="The heaviest target items (at most 10)")
    item_count: int
    categories: list[str]
    brands: list[str]
    price: float | None = Field(description="Weighted geometric mean price of the items")


class TargetedUser(BaseModel):
    user_id: str = Field(description="As stored (pseudonyms when privacy.pseudonymize is on)")
    score: float
    reason: str = Field(description="The strongest signal, in words")
    signals: dict[str, float] = Field(description="Weighted term of each signal (sum = score)")
    lifecycle: str | None = None
    region: str | None = None


class TargetingResult(BaseModel):
    target: TargetSummary
    users: list[TargetedUser] = Field(description="Best first")
    eligible: int = Field(description="Users scored after consent, filters and exclusions")
    excluded_buyers: int = Field(description="Users left out because they bought the item")
    as_of: float = Field(description="The `now` of the decay (epoch seconds)")
    weights: dict[str, float]


# -- neighbour sources -------------------------------------------------------------------


def model_neighbours(model: CoVisitation | None, vocab: Vocabulary) -> Neighbours:
    """Neighbours from an item-to-item model (row-max normalized, as ``neighbors``)."""

    def find(item_id: str, k: int) -> list[tuple[str, float]]:
        idx = vocab.index(item_id)
        if model is None or idx < 0:
            return []
        cols, vals = model.neighbors(idx, k)
        return [(vocab.id(int(c)), float(v)) for c, v in zip(cols, vals, strict=True)]

    return find


def content_neighbours(content: ContentSimilarity | None) -> Neighbours:
    """Content neighbours (text + category + brand), divided by the best score."""

    def find(item_id: str, k: int) -> list[tuple[str, float]]:
        if content is None or item_id not in content:
            return []
        found = content.neighbors(item_id, k)
        top = found[0][1] if found else 1.0
        return [(i, s / top) for i, s in found]

    return find


# -- internals ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Resolved:
    kind: TargetKind
    label: str
    items: IntArray
    weights: FloatArray
    keys: IntArray  # category key codes
    key_weights: FloatArray
    brands: IntArray
    brand_weights: FloatArray
    price: float | None
    item_id: str | None = None  # an item target (buyers may be excluded)


@dataclass(slots=True)
class _ItemArrays:
    """Catalog facts by item index, rebuilt when the catalog changes."""

    keys: Vocabulary  # category keys, as written
    key_lower: dict[str, list[int]]  # lower-case key or level name -> key codes
    cat: Any  # csr items x keys (1 = the item is in the key)
    brands: Vocabulary  # lower-case brand
    brand_name: list[str]  # display name by brand code
    brand_of: IntArray  # brand code by item (-1 none)
    brand_m: Any  # csr items x brands
    price: FloatArray  # NaN unknown
    original: FloatArray
    discounted: BoolArray
    has_cat: FloatArray
    has_brand: FloatArray

    @property
    def n(self) -> int:
        return int(self.price.shape[0])

    def pad(self, n: int) -> None:
        extra = n - self.n
        if extra <= 0:
            return
        self.cat.resize((n, self.cat.shape[1]))
        self.brand_m.resize((n, self.brand_m.shape[1]))
        nan = np.full(extra, np.nan)
        self.price = np.concatenate([self.price, nan])
        self.original = np.concatenate([self.original, nan])
        self.discounted = np.concatenate([self.discounted, np.zeros(extra, bool)])
        self.brand_of = np.concatenate([self.brand_of, np.full(extra, -1, np.int64)])
        self.has_cat = np.concatenate([self.has_cat, np.zeros(extra)])
        self.has_brand = np.concatenate([self.has_brand, np.zeros(extra)])


def _csr(rows: list[int], cols: list[int], shape: tuple[int, int]) -> Any:
    data = np.ones(len(rows), dtype=np.float64)
    m = sp.coo_array((data, (np.array(rows, np.int64), np.array(cols, np.int64))), shape=shape)
    out = sp.csr_array(m)
    out.data[:] = 1.0  # an item listed twice in a key is still one item
    return out


def _matvec(m: Any, v: FloatArray) -> FloatArray:
    return np.asarray(m @ v, np.float64)


def _saturate(x: FloatArray, scale: float) -> FloatArray:
    return np.asarray(-np.expm1(-np.maximum(x, 0.0) / scale), dtype=np.float64)


def _row_argmax(m: Any) -> IntArray:
    """Column of the largest entry of each CSR row (-1 for an empty row; ties: lower col)."""
    m = sp.csr_array(m)
    m.sum_duplicates()
    counts = np.diff(m.indptr)
    rows = np.repeat(np.arange(m.shape[0]), counts)
    order = np.lexsort((m.indices, -m.data, rows))
    out = np.full(m.shape[0], -1, dtype=np.int64)
    full = counts > 0
    out[full] = m.indices[order[m.indptr[:-1][full]]]
    return out


def _fmt_title(item: Item | None, item_id: str) -> str:
    return item.title if item is not None and item.title else item_id


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _leaf(key: str) -> str:
    return key.rsplit(SEP, 1)[-1]


def transform(raw: Mapping[str, FloatArray], weights: TargetingWeights) -> dict[str, FloatArray]:
    """The signals in [0, 1] from ``Targeter.raw_signals`` (the formula of the docstring)."""
    out = {name: _saturate(raw[name], weights.relation_scale) for name in RELATIONS}
    out["item"] = _saturate(raw["item"], weights.item_scale)
    for name in ("category", "brand"):
        out[name] = raw[name] * _saturate(raw[f"{name}_evidence"], weights.affinity_scale)
    out["price"] = np.asarray(raw["price"], np.float64)
    out["activity"] = _saturate(raw["activity"], weights.activity_scale)
    return {name: out[name] for name in SIGNALS}


def blend(signals: Mapping[str, FloatArray], weights: TargetingWeights) -> FloatArray:
    """``Σ weight_signal · s_signal``: the score of every user row."""
    return np.asarray(sum(weights.of(s) * signals[s] for s in SIGNALS), np.float64)


class Targeter:
    """Scores every user for a target; see the module docstring for the formula."""

    def __init__(
        self,
        params: ProfileParams | None = None,
        weights: TargetingWeights | None = None,
        *,
        half_life_days: float = 90.0,
        max_target_items: int = 100,
        relation_targets: int = 50,
        relation_k: int = 100,
        text_items: int = 20,
        text_min_score: float = 0.1,
    ) -> None:
        self.params = params or ProfileParams(weights=dict(RecommendSettings().event_weights))
        self.weights = weights or TargetingWeights()
        for name, value in (
            ("max_target_items", max_target_items),
            ("relation_targets", relation_targets),
            ("relation_k", relation_k),
            ("text_items", text_items),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if not half_life_days > 0:
            raise ConfigError(f"half_life_days must be > 0, got {half_life_days}")
        self.half_life_days = half_life_days
        self.half_life_s = half_life_days * DAY
        self.max_target_items = max_target_items
        self.relation_targets = relation_targets
        self.relation_k = relation_k
        self.text_items = text_items
        self.text_min_score = text_min_score
        self._reset()

    @classmethod
    def from_settings(cls, settings: Settings, weights: TargetingWeights | None = None) -> Self:
        """Event weights, half-life and lifecycle thresholds of the profiles."""
        return cls(ProfileParams.from_settings(settings.profiles, settings.recommend), weights)

    # -- state -----------------------------------------------------------------------

    def _reset(self) -> None:
        self.users_ = Vocabulary()
        self.items_ = Vocabulary()
        self.t_ref_: float | None = None
        self.seq_ = 0
        self._w: Any = sp.csr_array((0, 0), dtype=np.float64)  # decayed event weights
        self._p: Any = sp.csr_array((0, 0), dtype=np.float64)  # purchase counts
        self._a: Any = sp.csr_array((0, 0), dtype=np.float64)  # add-to-cart counts
        self._pending: list[tuple[IntArray, IntArray, FloatArray, FloatArray, FloatArray]] = []
        self.first_ts_ = np.empty(0)
        self.last_ts_ = np.empty(0)
        self.log_price_sum_ = np.empty(0)
        self.price_n_ = np.empty(0)
        self.purchases_ = np.empty(0)
        self.discounted_ = np.empty(0)
        self._items: dict[str, Item] = {}
        self._users: dict[str, User] = {}
        self._item_arrays: _ItemArrays | None = None
        self._consent: BoolArray = np.empty(0, bool)
        self._region: list[str | None] = []
        self._cache: dict[str, FloatArray] = {}

    def fit(self, frame: pl.DataFrame, items: Iterable[Item], users: Iterable[User]) -> Self:
        """Everything from an event-log frame (``ts`` column; ``seq`` when it has one)."""
        self._reset()
        self.upsert_items(items)
        self.upsert_users(users)
        self.update(frame)
        return self

    def upsert_items(self, items: Iterable[Item]) -> None:
        """New or changed catalog items (categories, brand, prices)."""
        batch = list(items)
        if not batch:
            return
        for item in batch:
            self._items[item.item_id] = item
            self.items_.add(item.item_id)
        self._item_arrays = None
        self._cache.clear()

    def upsert_users(self, users: Iterable[User]) -> None:
        """New user records (consent, region)."""
        for user in users:
            self._users[user.user_id] = user
            idx = self.users_.index(user.user_id)
            if 0 <= idx < self._consent.shape[0]:
                self._consent[idx] = consents(user)
                self._region[idx] = user.region

    def forget(self, user_id: str) -> None:
        """Drop the user's record and behaviour (erasure)."""
        self._users.pop(user_id, None)
        idx = self.users_.index(user_id)
        if idx < 0:
            return
        self._merge()
        for m in (self._w, self._p, self._a):
            if idx < m.shape[0]:
                m.data[m.indptr[idx] : m.indptr[idx + 1]] = 0.0
                m.eliminate_zeros()
        self.first_ts_[idx], self.last_ts_[idx] = np.inf, -np.inf
        for arr in (self.log_price_sum_, self.price_n_, self.purchases_, self.discounted_):
            arr[idx] = 0.0
        self._consent[idx], self._region[idx] = True, None
        self._cache.clear()

    def update(self, frame: pl.DataFrame) -> int:
        """Add the events of ``frame`` (impressions and anonymous events are ignored)."""
        if "seq" in frame.columns and frame.height:
            self.seq_ = max(self.seq_, int(frame.select(pl.col("seq").max()).item() or 0))
        df = frame.filter(
            pl.col("user_id").is_not_null() & (pl.col("type") != EventType.IMPRESSION.value)
        )
        if df.height == 0:
            return 0
        users = self.users_.indices(df["user_id"].cast(pl.String).to_list(), add=True)
        self._grow_users()
        ts = df["ts"].cast(pl.Float64).to_numpy()
        np.minimum.at(self.first_ts_, users, ts)
        np.maximum.at(self.last_ts_, users, ts)
        weight_of = {k: float(v) for k, v in self.params.weights.items()}
        kind = df["type"].cast(pl.String)
        weight = kind.replace_strict(weight_of, default=0.0, return_dtype=pl.Float64).to_numpy()
        keep = df["item_id"].is_not_null().to_numpy() & (weight > 0)
        if not keep.any():
            return df.height
        item_ids = df["item_id"].cast(pl.String).to_numpy()[keep].tolist()
        items = self.items_.indices(item_ids, add=True)
        users, ts, weight = users[keep], ts[keep], weight[keep]
        kind_k = kind.to_numpy()[keep]
        purchase = kind_k == EventType.PURCHASE.value
        cart = kind_k == EventType.ADD_TO_CART.value
        newest = float(ts.max())
        half_life = self.half_life_s
        if self.t_ref_ is None:
            self.t_ref_ = newest
        elif newest - self.t_ref_ > REBASE_HALF_LIVES * half_life:
            self._rebase(newest)
        w = weight * np.exp2((ts - self.t_ref_) / half_life)
        self._pending.append((users, items, w, purchase.astype(float), cart.astype(float)))
        arrays = self._arrays()
        if "price" in df.columns:
            paid = df["price"].cast(pl.Float64).fill_null(np.nan).to_numpy()[keep]
        else:
            paid = np.full(items.shape[0], np.nan)
        price = np.where(np.isnan(paid), arrays.price[items], paid)
        priced = (purchase | cart) & (price > 0)
        np.add.at(self.log_price_sum_, users[priced], np.log(price[priced]))
        np.add.at(self.price_n_, users[priced], 1.0)
        np.add.at(self.purchases_, users[purchase], 1.0)
        # discounted: the item is on discount, or it was paid below its original price
        disc = arrays.discounted[items] | (paid < arrays.original[items])
        np.add.at(self.discounted_, users[purchase & disc], 1.0)
        self._cache.clear()
        return df.height

    def _grow_users(self) -> None:
        n, old = len(self.users_), self.first_ts_.shape[0]
        if n <= old:
            return
        extra = n - old
        self.first_ts_ = np.concatenate([self.first_ts_, np.full(extra, np.inf)])
        self.last_ts_ = np.concatenate([self.last_ts_, np.full(extra, -np.inf)])
        for name in ("log_price_sum_", "price_n_", "purchases_", "discounted_"):
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros(extra)]))
        new_ids = self.users_.ids[old:n]
        records = [self._users.get(u) for u in new_ids]
        self._consent = np.concatenate(
            [self._consent, np.fromiter((consents(r) for r in records), bool, extra)]
        )
        self._region.extend(r.region if r is not None else None for r in records)

    def _rebase(self, t_ref: float) -> None:
        self._merge()
        assert self.t_ref_ is not None
        factor = 2.0 ** ((self.t_ref_ - t_ref) / self.half_life_s)
        self._w = self._w * factor
        self._pending = [(u, i, w * factor, p, a) for u, i, w, p, a in self._pending]
        self.t_ref_ = t_ref

    def _merge(self) -> None:
        """Fold pending events into the matrices, sized to the vocabularies."""
        shape = (len(self.users_), len(self.items_))
        if not self._pending and self._w.shape == shape:
            return
        mats = []
        for k, old in enumerate((self._w, self._p, self._a)):
            old = sp.csr_array(old)
            old.resize(shape)
            if self._pending:
                rows = np.concatenate([p[0] for p in self._pending])
                cols = np.concatenate([p[1] for p in self._pending])
                vals = np.concatenate([p[2 + k] for p in self._pending])
                add = sp.coo_array((vals, (rows, cols)), shape=shape).tocsr()
                old = sp.csr_array(old + add)
                old.eliminate_zeros()
            mats.append(old)
        self._w, self._p, self._a = mats
        self._pending = []
        self._cache.clear()

    def _arrays(self) -> _ItemArrays:
        """The catalog arrays, rebuilt after catalog changes, padded for new items."""
        arrays = self._item_arrays
        if arrays is None:
            arrays = self._item_arrays = self._build_arrays()
        arrays.pad(len(self.items_))
        return arrays

    def _build_arrays(self) -> _ItemArrays:
        n = len(self.items_)
        keys, brands = Vocabulary(), Vocabulary()
        brand_name: list[str] = []
        rows: list[int] = []
        cols: list[int] = []
        brand_of = np.full(n, -1, np.int64)
        price, original = np.full(n, np.nan), np.full(n, np.nan)
        discounted = np.zeros(n, bool)
        for item_id, item in self._items.items():
            idx = self.items_.index(item_id)
            for key in category_keys(item):
                rows.append(idx)
                cols.append(keys.add(key))
            if item.brand:
                code = brands.add(item.brand.lower())
                if code == len(brand_name):
                    brand_name.append(item.brand)
                brand_of[idx] = code
            if item.price is not None:
                price[idx] = item.price
            if item.original_price is not None:
                original[idx] = item.original_price
            discounted[idx] = bool(item.discount)
        key_lower: dict[str, list[int]] = {}
        for code, key in enumerate(keys.ids):
            for name in {key.lower(), _leaf(key).lower()}:
                key_lower.setdefault(name, []).append(code)
        cat = _csr(rows, cols, (n, len(keys)))
        has = brand_of >= 0
        brand_m = _csr(np.flatnonzero(has).tolist(), brand_of[has].tolist(), (n, len(brands)))
        return _ItemArrays(
            keys=keys,
            key_lower=key_lower,
            cat=cat,
            brands=brands,
            brand_name=brand_name,
            brand_of=brand_of,
            brand_m=brand_m,
            price=price,
            original=original,
            discounted=discounted,
            has_cat=(np.diff(cat.indptr) > 0).astype(np.float64),
            has_brand=has.astype(np.float64),
        )

    def _cached(self, name: str, make: Callable[[], FloatArray]) -> FloatArray:
        out = self._cache.get(name)
        if out is None:
            out = self._cache[name] = make()
        return out

    def _snapshot(self) -> tuple[Any, _ItemArrays]:
        self._merge()
        arrays = self._arrays()
        return self._w, arrays

    # -- reads -----------------------------------------------------------------------

    def affinities(
        self, user_id: str, kind: Literal["category", "brand"] = "category"
    ) -> dict[str, float]:
        """The user's category (or brand) shares, as ``ProfileIndex.affinities``."""
        w, arrays = self._snapshot()
        idx = self.users_.index(user_id)
        if idx < 0:
            return {}
        row = w[[idx]]
        m, names, has = (
            (arrays.cat, arrays.keys.ids, arrays.has_cat)
            if kind == "category"
            else (arrays.brand_m, arrays.brand_name, arrays.has_brand)
        )
        total = float((row @ has)[0])
        if total <= 0:
            return {}
        values = np.asarray((row @ m).toarray()).ravel() / total
        return {names[k]: float(v) for k, v in enumerate(values) if v > 0}

    def buyers(self, item_id: str) -> BoolArray:
        """Which user rows ever bought ``item_id``."""
        self._merge()
        col = self.items_.index(item_id)
        p = self._p
        if not 0 <= col < p.shape[1]:
            return np.zeros(p.shape[0], bool)
        return np.asarray(p[:, [col]].toarray()).ravel() > 0

    def lifecycle(self, now: float) -> IntArray:
        """Lifecycle stage code (index in ``LIFECYCLES``) of every user row."""
        p = self.params
        since_first = (now - self.first_ts_) / DAY
        since_last = (now - self.last_ts_) / DAY
        out = np.full(since_last.shape, LIFECYCLES.index("active"), np.int64)
        out[since_first <= p.new_days] = LIFECYCLES.index("new")
        out[since_last > p.at_risk_days] = LIFECYCLES.index("at_risk")
        out[since_last > p.churn_days] = LIFECYCLES.index("churned")
        return out

    def resolve(self, query: TargetingQuery, content: ContentSimilarity | None = None) -> _Resolved:
        """The weighted item set, category keys and brands of a query."""
        w, arrays = self._snapshot()
        if query.item_id is not None:
            return self._resolve_item(query.item_id, arrays)
        if query.text is not None:
            return self._resolve_text(query.text, content, arrays)
        return self._resolve_group(query.category, query.brand, w, arrays)

    def _resolve_item(self, item_id: str, arrays: _ItemArrays) -> _Resolved:
        idx = self.items_.index(item_id)
        if idx < 0:
            raise NotFoundError(f"item {item_id!r} is unknown (not in the catalog or events)")
        item = self._items.get(item_id)
        keys = np.asarray(arrays.cat[[idx]].indices, np.int64)
        brand = int(arrays.brand_of[idx])
        price = float(arrays.price[idx])
        return _Resolved(
            kind="item",
            label=_fmt_title(item, item_id),
            items=np.array([idx], np.int64),
            weights=np.ones(1),
            keys=keys,
            key_weights=np.full(keys.shape[0], 1.0 / max(keys.shape[0], 1)),
            brands=np.array([brand] if brand >= 0 else [], np.int64),
            brand_weights=np.ones(1 if brand >= 0 else 0),
            price=None if math.isnan(price) else price,
            item_id=item_id,
        )

    def _resolve_group(
        self, category: str | None, brand: str | None, w: Any, arrays: _ItemArrays
    ) -> _Resolved:
        mask = np.ones(arrays.n, bool)
        keys = np.empty(0, np.int64)
        labels: list[str] = []
        if category is not None:
            wanted = SEP.join(split_category(category)).lower()
            keys = np.array(sorted(arrays.key_lower.get(wanted, [])), np.int64)
            if not keys.size:
                raise NotFoundError(f"no catalog item is in category {category!r}")
            in_cat = np.asarray(arrays.cat[:, keys].sum(axis=1)).ravel() > 0
            mask &= in_cat
            labels.append(_leaf(arrays.keys.id(int(keys[0]))))
        brands = np.empty(0, np.int64)
        if brand is not None:
            code = arrays.brands.index(brand.strip().lower())
            if code < 0:
                raise NotFoundError(f"no catalog item has brand {brand!r}")
            brands = np.array([code], np.int64)
            mask &= arrays.brand_of == code
            labels.insert(0, arrays.brand_name[code])
        members = np.flatnonzero(mask)
        if not members.size:
            raise NotFoundError(f"no catalog item is both in {category!r} and of brand {brand!r}")
        pop = self._cached("popularity", lambda: np.asarray(w.sum(axis=0), np.float64).ravel())
        pop_m = pop[members] if pop.shape[0] >= arrays.n else np.zeros(members.shape[0])
        top = members[np.lexsort((members, -pop_m))][: self.max_target_items]
        weights = pop[top] if pop.shape[0] >= arrays.n else np.zeros(top.shape[0])
        weights = weights + 0.01 * max(float(weights.sum()), 1.0) / top.shape[0]
        kind: TargetKind = (
            "category+brand" if category and brand else "category" if category else "brand"
        )
        return _Resolved(
            kind=kind,
            label=" ".join(labels) + " items",
            items=top.astype(np.int64),
            weights=weights / weights.sum(),
            keys=keys,
            key_weights=np.full(keys.shape[0], 1.0 / max(keys.shape[0], 1)),
            brands=brands,
            brand_weights=np.ones(brands.shape[0]),
            price=self._price(top, weights / weights.sum(), arrays),
        )

    def _resolve_text(
        self, text: str, content: ContentSimilarity | None, arrays: _ItemArrays
    ) -> _Resolved:
        if content is None or len(content) == 0:
            raise NotFoundError("no content index to match the text against")
        scores = content.scores_for(Item(item_id="targeting:query", title=text))
        best = float(scores.max(initial=0.0))
        floor = max(self.text_min_score, best / 2.0)
        order = np.flatnonzero(scores >= floor) if best > 0 else np.empty(0, np.int64)
        order = order[np.lexsort((order, -scores[order]))][: self.text_items]
        if not order.size:
            raise NotFoundError(f"no catalog item matches the text {text!r}")
        ids = [content.items_.id(int(i)) for i in order]
        items = self.items_.indices(ids, add=True)
        arrays = self._arrays()
        weights = scores[order] / scores[order].sum()
        depth = np.maximum(np.diff(arrays.cat[items].indptr), 1).astype(np.float64)
        key_w = np.asarray(arrays.cat[items].T @ (weights / depth)).ravel()
        keys = np.flatnonzero(key_w > 0)
        b = arrays.brand_of[items]
        brand_w = np.bincount(
            b[b >= 0], weights=weights[b >= 0], minlength=len(arrays.brands)
        ).astype(np.float64)
        brands = np.flatnonzero(brand_w > 0)
        return _Resolved(
            kind="text",
            label=f"“{text.strip()[:60]}”",
            items=items,
            weights=weights,
            keys=keys.astype(np.int64),
            key_weights=key_w[keys],
            brands=brands.astype(np.int64),
            brand_weights=brand_w[brands],
            price=self._price(items, weights, arrays),
        )

    @staticmethod
    def _price(items: IntArray, weights: FloatArray, arrays: _ItemArrays) -> float | None:
        p = arrays.price[items]
        ok = p > 0
        if not ok.any():
            return None
        return float(np.exp(np.average(np.log(p[ok]), weights=weights[ok] + 1e-12)))

    # -- scoring ---------------------------------------------------------------------

    def raw_signals(
        self,
        target: _Resolved,
        relations: Mapping[str, Neighbours],
        now: float,
    ) -> dict[str, FloatArray]:
        """The measures behind the signals for every user row, before ``transform``.

        ``item`` and the relations: decayed weights ``x``; ``category`` / ``brand``:
        the shares, with ``category_evidence`` / ``brand_evidence`` (``c_u``);
        ``activity``: ``Σ_i W[u, i]``; ``price``: the price fit itself.
        """
        w, arrays = self._snapshot()
        n_users, n_items = w.shape
        decay = 2.0 ** (((self.t_ref_ or now) - now) / self.half_life_s)
        out: dict[str, FloatArray] = {}
        vec = np.zeros(n_items)
        vec[target.items] = target.weights
        out["item"] = decay * np.asarray(w @ vec, np.float64)
        for name in RELATIONS:
            rel = self._relation_vector(target, relations.get(name), n_items)
            x = np.zeros(n_users) if rel is None else np.asarray(w @ rel, np.float64)
            out[name] = decay * x
        for name, m, has, codes, q in (
            ("category", arrays.cat, arrays.has_cat, target.keys, target.key_weights),
            ("brand", arrays.brand_m, arrays.has_brand, target.brands, target.brand_weights),
        ):
            total = self._cached(f"{name}_total", partial(_matvec, w, has))
            x = np.asarray(w @ (m[:, codes] @ q), np.float64) if codes.size else np.zeros(n_users)
            out[name] = np.divide(x, total, out=np.zeros(n_users), where=total > 0)
            out[f"{name}_evidence"] = decay * total
        out["price"] = np.zeros(n_users)
        if target.price is not None:
            has_price = self.price_n_ > 0
            centre = np.divide(
                self.log_price_sum_, self.price_n_, out=np.zeros(n_users), where=has_price
            )
            gap = math.log(target.price) - centre
            out["price"] = np.where(has_price, np.exp(-(gap**2) / (2 * PRICE_TOLERANCE**2)), 0.0)
        total = self._cached("total", lambda: np.asarray(w.sum(axis=1), np.float64).ravel())
        out["activity"] = decay * total
        return out

    def signals(
        self, target: _Resolved, relations: Mapping[str, Neighbours], now: float
    ) -> dict[str, FloatArray]:
        """Each signal's value in [0, 1] for every user row (see the module docstring)."""
        return transform(self.raw_signals(target, relations, now), self.weights)

    def _relation_vector(
        self, target: _Resolved, neighbours: Neighbours | None, n_items: int
    ) -> FloatArray | None:
        """``R(h)`` over the item rows, target items set to 0 (None: no relation)."""
        if neighbours is None:
            return None
        order = np.lexsort((target.items, -target.weights))[: self.relation_targets]
        used = target.weights[order] / target.weights[order].sum()
        ids: list[str] = []
        vals: list[float] = []
        for t, wt in zip(target.items[order].tolist(), used.tolist(), strict=True):
            for other, v in neighbours(self.items_.id(t), self.relation_k):
                ids.append(other)
                vals.append(wt * v)
        if not ids:
            return None
        cols = self.items_.indices(ids)
        ok = (cols >= 0) & (cols < n_items)
        rel: FloatArray = np.zeros(n_items)
        np.add.at(rel, cols[ok], np.array(vals)[ok])
        rel[target.items] = 0.0
        return rel

    def eligible(
        self,
        query: TargetingQuery,
        target: _Resolved,
        now: float,
        only_users: Iterable[str] | None = None,
    ) -> tuple[BoolArray, int]:
        """``(mask over user rows, number of buyers excluded)``."""
        self._merge()
        n = len(self.users_)
        ok = np.isfinite(self.last_ts_) & self._consent
        f = query.filters
        if f.consent:
            ok &= np.fromiter(
                (
                    (r := self._users.get(u)) is not None
                    and all(r.consent.get(c) is True for c in f.consent)
                    for u in self.users_.ids
                ),
                bool,
                n,
            )
        if only_users is not None:
            rows = self.users_.indices(list(only_users))
            member = np.zeros(n, bool)
            member[rows[rows >= 0]] = True
            ok &= member
        if f.lifecycle:
            codes = [k for k, stage in enumerate(LIFECYCLES) if stage in f.lifecycle]
            ok &= np.isin(self.lifecycle(now), codes)
        if f.regions:
            wanted = {r.lower() for r in f.regions}
            ok &= np.fromiter(
                (r is not None and r.lower() in wanted for r in self._region), bool, n
            )
        if f.min_price_sensitivity is not None or f.max_price_sensitivity is not None:
            buyers = self.purchases_ > 0
            share = np.divide(self.discounted_, self.purchases_, out=np.zeros(n), where=buyers)
            ok &= buyers
            if f.min_price_sensitivity is not None:
                ok &= share >= f.min_price_sensitivity
            if f.max_price_sensitivity is not None:
                ok &= share <= f.max_price_sensitivity
        excluded = 0
        if query.exclude_buyers and target.item_id is not None:
            bought = self.buyers(target.item_id)
            excluded = int((ok & bought).sum())
            ok &= ~bought
        return ok, excluded

    def rank(
        self,
        query: TargetingQuery,
        *,
        now: float,
        relations: Mapping[str, Neighbours] | None = None,
        content: ContentSimilarity | None = None,
        only_users: Iterable[str] | None = None,
    ) -> TargetingResult:
        """The ``query.limit`` best users for the target, with scores and reasons."""
        target = self.resolve(query, content)
        values = self.signals(target, relations or {}, now)
        mask, excluded = self.eligible(query, target, now, only_users)
        contrib = np.vstack([self.weights.of(s) * values[s] for s in SIGNALS])
        score = contrib.sum(axis=0)
        score[~mask] = 0.0
        candidates = np.flatnonzero(score > 0)
        chosen = candidates[np.lexsort((candidates, -score[candidates]))][: query.limit]
        reasons = self._reasons(target, chosen, contrib[:, chosen], relations or {}, now)
        stages = self.lifecycle(now)[chosen].tolist()
        scores = np.round(score[chosen], 6).tolist()
        terms = np.round(contrib[:, chosen], 6).T.tolist()
        users = [
            TargetedUser.model_construct(  # trusted values: no validation (up to 10,000)
                user_id=self.users_.id(u),
                score=scores[j],
                reason=reasons[j],
                signals=dict(zip(SIGNALS, terms[j], strict=True)),
                lifecycle=LIFECYCLES[stages[j]],
                region=self._region[u],
            )
            for j, u in enumerate(chosen.tolist())
        ]
        return TargetingResult(
            target=self._summary(target),
            users=users,
            eligible=int(mask.sum()),
            excluded_buyers=excluded,
            as_of=now,
            weights=self.weights.as_dict(),
        )

    # -- explanations ----------------------------------------------------------------

    def _summary(self, target: _Resolved) -> TargetSummary:
        arrays = self._arrays()
        order = np.lexsort((target.items, -target.weights))
        items = [
            TargetItem(
                item_id=(iid := self.items_.id(int(target.items[k]))),
                title=(it.title if (it := self._items.get(iid)) is not None else None),
                weight=round(float(target.weights[k]), 6),
            )
            for k in order[:10].tolist()
        ]
        return TargetSummary(
            kind=target.kind,
            label=target.label,
            items=items,
            item_count=int(target.items.shape[0]),
            categories=[arrays.keys.id(int(k)) for k in target.keys],
            brands=[arrays.brand_name[int(b)] for b in target.brands],
            price=None if target.price is None else round(target.price, 4),
        )

    def _title(self, idx: int) -> str:
        iid = self.items_.id(idx)
        return _fmt_title(self._items.get(iid), iid)

    def _reasons(
        self,
        target: _Resolved,
        users: IntArray,
        contrib: FloatArray,
        relations: Mapping[str, Neighbours],
        now: float,
    ) -> list[str]:
        """The phrase of each user's largest term (vectorized lookups, then text)."""
        if not users.size:
            return []
        w, arrays = self._snapshot()
        best = contrib.argmax(axis=0)
        rows, bought, carted = w[users], self._p[users], self._a[users]
        pos = np.arange(users.shape[0])

        def strongest(vector: FloatArray) -> tuple[IntArray, list[str]]:
            """The item of each row adding most to ``rows @ vector``, with its verb."""
            weighted = sp.csr_array(rows.multiply(vector[None, :]))
            weighted.eliminate_zeros()
            top = _row_argmax(weighted)
            col = np.maximum(top, 0)
            b, a = bought[pos, col], carted[pos, col]
            verbs = [
                "bought" if x > 0 else "added to cart" if y > 0 else "viewed"
                for x, y in zip(b, a, strict=True)
            ]
            return top, verbs

        vec = np.zeros(w.shape[1])
        vec[target.items] = target.weights
        item_top, item_verb = strongest(vec)
        item_n = np.rint(bought[pos, np.maximum(item_top, 0)]).astype(np.int64)
        group_n = np.rint(np.asarray(bought @ (vec > 0).astype(np.float64))).astype(np.int64)
        rel_top: dict[str, tuple[IntArray, list[str]]] = {}
        for name in RELATIONS:
            if (best == SIGNALS.index(name)).any():
                rel = self._relation_vector(target, relations.get(name), w.shape[1])
                if rel is not None:
                    rel_top[name] = strongest(rel)
        cat_share = self._row_shares(rows, arrays.cat, arrays.has_cat, target.keys)
        depth = np.array([arrays.keys.id(int(k)).count(SEP) for k in target.keys], np.int64)
        brand_share = self._row_shares(rows, arrays.brand_m, arrays.has_brand, target.brands)
        brand_n = np.zeros((users.shape[0], target.brands.shape[0]), np.int64)
        if target.brands.size:
            brand_n = np.rint((bought @ arrays.brand_m[:, target.brands]).toarray()).astype(
                np.int64
            )
        link = {
            "bought_together": "often bought with",
            "covisit": "often viewed together with",
            "similar": "similar to",
        }
        out: list[str] = []
        for j, (u, k) in enumerate(zip(users.tolist(), best.tolist(), strict=True)):
            signal = SIGNALS[k]
            if signal == "item" and target.kind in ("item", "text") and item_top[j] >= 0:
                title = self._title(int(item_top[j]))
                n = int(item_n[j])
                out.append(f"bought {title} {_times(n)}" if n else f"{item_verb[j]} {title}")
            elif signal == "item" and group_n[j] > 0:
                out.append(f"bought {target.label} {_times(int(group_n[j]))}")
            elif signal == "item" and item_top[j] >= 0:
                out.append(f"{item_verb[j]} {self._title(int(item_top[j]))}")
            elif signal in rel_top and rel_top[signal][0][j] >= 0:
                top, verbs = rel_top[signal]
                title = self._title(int(top[j]))
                out.append(f"{verbs[j]} {title}, {link[signal]} {target.label}")
            elif signal == "category" and target.keys.size:
                c = int(np.lexsort((-depth, -cat_share[j]))[0])  # largest share, deepest key
                key = _leaf(arrays.keys.id(int(target.keys[c])))
                out.append(f"loves {key} ({100 * cat_share[j, c]:.0f}% of activity)")
            elif signal == "brand" and target.brands.size:
                c = int(np.argmax(brand_share[j]))
                name = arrays.brand_name[int(target.brands[c])]
                n = int(brand_n[j, c])
                share = f"likes {name} ({100 * brand_share[j, c]:.0f}% of activity)"
                out.append(f"bought {name} {_times(n)}" if n else share)
            elif signal == "price" and target.price is not None and self.price_n_[u] > 0:
                usual = math.exp(self.log_price_sum_[u] / self.price_n_[u])
                out.append(f"usually pays around {usual:.2f} (target {target.price:.2f})")
            else:
                days = max(0.0, (now - self.last_ts_[u]) / DAY)
                when = "today" if days < 1 else f"{days:.0f} days ago"
                out.append(f"active shopper (last seen {when})")
        return out

    @staticmethod
    def _row_shares(rows: Any, m: Any, has: FloatArray, codes: IntArray) -> FloatArray:
        """``rows``' shares of each of ``codes`` (users x codes)."""
        total = np.asarray(rows @ has, np.float64)
        num = np.asarray((rows @ m[:, codes]).toarray(), np.float64)
        return np.divide(num, total[:, None], out=np.zeros_like(num), where=total[:, None] > 0)
