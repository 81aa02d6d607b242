"""Candidate sources: each proposes items with its own score, in one call.

A source returns ``Candidates`` (item indices and scores, higher is better) for a
shopper. Sources never raise for a shopper they know nothing about: they return
nothing, and the pipeline goes on with the others.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from shopcast.domain import EventType
from shopcast.models import CoVisitation
from shopcast.models._base import EVENT_CODES, BatchScorer, Context, FloatArray, IntArray
from shopcast.serving.ann import VectorIndex
from shopcast.serving.catalog import CatalogIndex
from shopcast.training.bundle import ModelBundle

#: How many of the latest session items seed co-visitation candidates.
SEED_ITEMS = 5
SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class RecommendRequest:
    """What the caller asked for. ``items`` are the scene's context items (the product
    on a product page, the cart's content); empty means "use the live session"."""

    user_id: str | None = None
    session_id: str | None = None
    k: int = 10
    scene: str = "home"
    category: str | None = None
    brand: str | None = None
    price_min: float | None = None
    price_max: float | None = None
    exclude: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    page: int = 1


@dataclass(slots=True)
class Shopper:
    """Output of the context stage: the model context and what we know of the shopper."""

    context: Context
    purchases: dict[int, list[float]] = field(default_factory=dict)
    cart: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    anchors: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    shown: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Candidates:
    items: IntArray
    scores: FloatArray
    #: Per item, the context item it was proposed because of (-1: none), when the
    #: source knows it (co-visitation): ``explain`` then needs no second pass.
    because: IntArray | None = None

    @staticmethod
    def empty() -> Candidates:
        return Candidates(np.empty(0, np.int64), np.empty(0, np.float64))


class CandidateSource(Protocol):
    name: str

    def __call__(self, shopper: Shopper, request: RecommendRequest, n: int) -> Candidates: ...


def latest_unique(recent: IntArray, n: int) -> IntArray:
    """The ``n`` most recent distinct items, most recent first."""
    out: list[int] = []
    for idx in recent[::-1].tolist():
        if idx not in out:
            out.append(idx)
            if len(out) == n:
                break
    return np.asarray(out, dtype=np.int64)


class CovisitSource:
    """Items co-visited with the scene's anchors (or the latest session items).

    ``role`` picks the bundle model: ``covisit`` (all interactions) or
    ``bought_together`` (carts and orders only).
    """

    def __init__(self, bundle: ModelBundle, role: str = "covisit") -> None:
        self.bundle = bundle
        self.name = role

    def __call__(self, shopper: Shopper, request: RecommendRequest, n: int) -> Candidates:
        model = self.bundle.models.get(self.name)
        if not isinstance(model, CoVisitation):
            return Candidates.empty()
        seeds = (
            shopper.anchors
            if shopper.anchors.size
            else latest_unique(shopper.context.recent_items, SEED_ITEMS)
        )
        if not seeds.size:
            return Candidates.empty()
        pool = np.unique(np.concatenate([model.neighbors(int(s), n)[0] for s in seeds]))
        scores, because = model.score_and_contributors(anchored_context(shopper), pool)
        return Candidates(pool, scores, because)


def anchored_context(shopper: Shopper) -> Context:
    """The context whose recent items are the anchors (most important last), if any."""
    ctx = shopper.context
    if not shopper.anchors.size:
        return ctx
    return Context(
        now=ctx.now,
        user_id=ctx.user_id,
        session_id=ctx.session_id,
        recent_items=shopper.anchors[::-1],
        recent_types=np.zeros(shopper.anchors.size, np.int64),
        recent_ts=np.full(shopper.anchors.size, ctx.now),
    )


class ModelSource:
    """The top items of a bundle model that scores the whole catalog for a context
    (``BatchScorer``), e.g. the sequence model on the live session. Items of the
    context itself are left out (the model predicts what comes *next*)."""

    heavy = True  # runs on a worker thread under the pipeline's source timeout

    def __init__(self, bundle: ModelBundle, role: str, *, needs_session: bool = True) -> None:
        self.bundle = bundle
        self.name = role
        self.needs_session = needs_session

    def __call__(self, shopper: Shopper, request: RecommendRequest, n: int) -> Candidates:
        model = self.bundle.models.get(self.name)
        if not isinstance(model, BatchScorer):
            return Candidates.empty()
        ctx = anchored_context(shopper)
        if self.needs_session and not ctx.recent_items.size:
            return Candidates.empty()
        scores = model.score_all([ctx])[0].copy()
        seen = ctx.recent_items[(ctx.recent_items >= 0) & (ctx.recent_items < scores.shape[0])]
        scores[seen] = 0.0
        n = min(n, scores.shape[0])
        if n == 0:
            return Candidates.empty()
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[scores[top] > 0]
        return Candidates(top.astype(np.int64), scores[top].astype(np.float64))


@runtime_checkable
class Embedder(Protocol):
    """A model exposing two towers for maximum-inner-product search (the hybrid model)."""

    def query_vectors(self, contexts: Sequence[Context]) -> FloatArray: ...

    def item_vectors(self) -> FloatArray: ...


class EmbeddingSource:
    """Nearest items to the shopper's embedding (user tower: id, profile, behaviour,
    live session) in an inner-product index over the item tower (``ann.py``).

    Scores are ``exp(logit - best logit)``: 1 for the best item, in (0, 1] below.
    """

    heavy = True  # runs on a worker thread under the pipeline's source timeout

    def __init__(self, bundle: ModelBundle, role: str = "embedding", **index: Any) -> None:
        self.bundle = bundle
        self.name = role
        self.index_options = index
        self._index: tuple[int, VectorIndex] | None = None

    def _index_for(self, model: Embedder) -> VectorIndex:
        if self._index is None or self._index[0] != id(model):
            self._index = (id(model), VectorIndex(model.item_vectors(), **self.index_options))
        return self._index[1]

    def __call__(self, shopper: Shopper, request: RecommendRequest, n: int) -> Candidates:
        model = self.bundle.models.get(self.name)
        if not isinstance(model, Embedder):
            return Candidates.empty()
        index = self._index_for(model)
        query = model.query_vectors([anchored_context(shopper)])[0]
        items, logits = index.search(query, n)
        if not items.size:
            return Candidates.empty()
        return Candidates(items, np.exp(logits - logits.max()))


class PopularSource:
    """Time-decayed popularity, inside the requested category when there is one."""

    name = "popular"

    def __init__(self, bundle: ModelBundle, catalog: CatalogIndex) -> None:
        self.bundle = bundle
        self.catalog = catalog

    def __call__(self, shopper: Shopper, request: RecommendRequest, n: int) -> Candidates:
        mask = self.catalog.category_mask(request.category) if request.category else None
        items = self.bundle.popularity.top(n, mask=mask)
        return Candidates(items, self.bundle.popularity.score(shopper.context, items))


class CategoryPopularSource:
    """Popular items of the category of the shopper's latest item ("popular in Y")."""

    name = "category_popular"

    def __init__(self, bundle: ModelBundle, catalog: CatalogIndex) -> None:
        self.bundle = bundle
        self.catalog = catalog

    def __call__(self, shopper: Shopper, request: RecommendRequest, n: int) -> Candidates:
        category = self.catalog.latest_category(
            shopper.anchors if shopper.anchors.size else shopper.context.recent_items
        )
        if category is None:
            return Candidates.empty()
        items = self.bundle.popularity.top(n, mask=self.catalog.category_mask(category))
        return Candidates(items, self.bundle.popularity.score(shopper.context, items))


class BuyAgainSource:
    """Items the shopper re-buys on a cycle, scored by how due the next purchase is.

    The cycle is the median gap between the shopper's purchases of the item; the score
    peaks when the time since the last purchase reaches the cycle (a Gaussian in the
    ratio, width 0.5). Items bought once are not proposed.
    """

    name = "buy_again"

    def __call__(self, shopper: Shopper, request: RecommendRequest, n: int) -> Candidates:
        items: list[int] = []
        scores: list[float] = []
        now = shopper.context.now
        for idx, times in shopper.purchases.items():
            if len(times) < 2:
                continue
            # A handful of times: plain Python is many times faster than numpy here.
            cycle = statistics.median([b - a for a, b in itertools.pairwise(times)])
            if cycle <= 0:
                continue
            due = (now - times[-1]) / cycle
            items.append(idx)
            scores.append(math.exp(-(((due - 1.0) / 0.5) ** 2)))
        if not items:
            return Candidates.empty()
        order = np.argsort(-np.asarray(scores), kind="stable")[:n]
        return Candidates(np.asarray(items, np.int64)[order], np.asarray(scores)[order])


#: Event types that count as having looked at an item (a purchase does not: bought
#: items are left out of "recently viewed").
VIEWED_TYPES: tuple[EventType, ...] = (
    EventType.VIEW,
    EventType.CLICK,
    EventType.FAVORITE,
    EventType.ADD_TO_CART,
    EventType.REMOVE_FROM_CART,
)


class RecentlyViewedSource:
    """Items of the live session the shopper looked at but did not buy ("recently
    viewed"), scored by recency and frequency.

    Each look at an item adds ``2 ** -(events since it / half_life_events)`` times
    ``2 ** -(age / half_life_hours)``: the latest item of a session scores highest, an
    item looked at three times ranks above one looked at once, and a look from days
    ago fades. Items the shopper bought (in the live session or before) are left out.
    The scene's rules still apply downstream: what earlier pages of a listing showed,
    the scene's own items (the product on the page, the cart) and the request's
    ``exclude`` list never come back through this source.
    """

    name = "recently_viewed"

    def __init__(self, half_life_events: float = 5.0, half_life_hours: float = 24.0) -> None:
        if half_life_events <= 0 or half_life_hours <= 0:
            raise ValueError("half lives must be > 0")
        self.half_life_events = half_life_events
        self.half_life_s = half_life_hours * 3600.0
        self._viewed = np.zeros(max(EVENT_CODES.values()) + 1, dtype=bool)
        self._viewed[[EVENT_CODES[t] for t in VIEWED_TYPES]] = True

    def __call__(self, shopper: Shopper, request: RecommendRequest, n: int) -> Candidates:
        ctx = shopper.context
        items = ctx.recent_items
        if not items.size or n <= 0:
            return Candidates.empty()
        types = ctx.recent_types
        looked = (
            self._viewed[np.clip(types, 0, self._viewed.shape[0] - 1)]
            if types.shape == items.shape
            else np.ones(items.shape[0], dtype=bool)
        )
        if shopper.purchases:
            looked &= ~np.isin(items, np.fromiter(shopper.purchases, np.int64))
        if not looked.any():
            return Candidates.empty()
        since = (items.shape[0] - 1 - np.arange(items.shape[0]))[looked]
        weight = np.exp2(-since / self.half_life_events)
        if ctx.recent_ts.shape == items.shape:
            age = np.maximum(ctx.now - ctx.recent_ts[looked], 0.0)
            weight = weight * np.exp2(-age / self.half_life_s)
        pool, inverse = np.unique(items[looked], return_inverse=True)
        scores = np.bincount(inverse.reshape(-1), weights=weight, minlength=pool.shape[0])
        order = np.argsort(-scores, kind="stable")[:n]
        return Candidates(pool[order].astype(np.int64), scores[order].astype(np.float64))


class ContentNeighbours(Protocol):
    def neighbors(
        self, item_id: str, k: int, *, exclude: Iterable[str] = ()
    ) -> list[tuple[str, float]]: ...


class NewArrivalsSource:
    """Items added to the catalog in the last ``days``, before anyone interacted with them.

    With a session, new items are scored by content similarity (text + category) to
    the latest items; without one, by freshness (1 for today, falling linearly to 0).
    """

    name = "new_arrivals"

    def __init__(
        self,
        bundle: ModelBundle,
        catalog: CatalogIndex,
        content: ContentNeighbours | None,
        days: float = 30.0,
    ) -> None:
        self.bundle = bundle
        self.catalog = catalog
        self.content = content
        self.days = days

    def __call__(self, shopper: Shopper, request: RecommendRequest, n: int) -> Candidates:
        now = shopper.context.now
        fresh = self.catalog.created_since(now - self.days * SECONDS_PER_DAY)
        if not fresh.size:
            return Candidates.empty()
        seeds = (
            shopper.anchors
            if shopper.anchors.size
            else latest_unique(shopper.context.recent_items, 3)
        )
        if self.content is None or not seeds.size:
            created = np.asarray([self.catalog.created_at(int(i)) for i in fresh[:n]])
            return Candidates(
                fresh[:n], np.clip(1 - (now - created) / (self.days * SECONDS_PER_DAY), 0, 1)
            )
        fresh_ids = {self.bundle.items.id(int(i)) for i in fresh}
        best: dict[str, float] = {}
        for seed in seeds.tolist():
            for other, sim in self.content.neighbors(self.bundle.items.id(seed), 4 * n):
                if other in fresh_ids and sim > best.get(other, 0.0):
                    best[other] = sim
        if not best:
            return Candidates.empty()
        ids = sorted(best, key=lambda i: -best[i])[:n]
        return Candidates(self.bundle.items.indices(ids), np.asarray([best[i] for i in ids]))
