"""The online recommendation pipeline, as named stages.

    context → candidates → rank → rules → rerank → placements → explain

- **context**: the live sessions of the user and/or anonymous session (recent items,
  purchases, cart), the scene's anchor items, what earlier pages showed.
- **candidates**: the scene's sources (``sources.py``), each with its own score.
- **rank**: a weighted blend of each source's scores scaled to [0, 1]; an item is
  credited to the source contributing most to it, except that an item the "recently
  viewed" source proposes (the shopper's own) is credited to it (its reason, and the
  rerank's exemption of re-shown items). When the bundle holds a learned
  ranker (role ``ranker``, ``ranker.py``) for the scene, it scores the pool instead
  (same items, same credited sources); if it fails, the blend is served and
  ``ranker`` is named in ``degraded``.
- **rules**: filters and boosts (``rules.py``).
- **rerank**: maximal marginal relevance for diversity (``rerank.py``).
- **placements**: merchandiser pins and sponsored slots.
- **explain**: a reason per item ("because you viewed X", "popular in Y", "sponsored").

With a ``ResultCache`` (``result_cache.py``, the engine's default), candidates → rank →
rules are computed once per shopper, scene, filters, live session, catalog revision and
model, then reused (less the page's shown items and ``exclude``) until one of those
changes or ``ttl_s`` passes; rerank, placements and explain run per request, except
that a request dropping nothing from a kept list reuses the items kept with it.

A source that fails is skipped and named in ``degraded``; if the pipeline itself
fails, the answer falls back to popular in-stock items: a model never turns a
request into a 5xx.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
import uuid
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from shopcast.config import MerchandisingSettings
from shopcast.domain import EventType, Recommendation, RecommendedItem
from shopcast.errors import StateUnavailableError
from shopcast.models._base import EVENT_CODES, Context, IntArray
from shopcast.serving.catalog import CatalogIndex
from shopcast.serving.factor_source import FactorSource
from shopcast.serving.ranker import LearnedRanker, RankStage, UserStates
from shopcast.serving.rerank import MMR
from shopcast.serving.result_cache import (
    EXCLUDE_MARGIN,
    CachedRanking,
    ResultCache,
    cache_key,
    rerank_depth,
    subjects_of,
)
from shopcast.serving.rules import (
    Boosts,
    ExcludeSeen,
    InStock,
    Pins,
    Placement,
    Ranked,
    RequestFilters,
    Rule,
    Slot,
    Sponsored,
)
from shopcast.serving.sources import (
    BuyAgainSource,
    Candidates,
    CandidateSource,
    CategoryPopularSource,
    ContentNeighbours,
    CovisitSource,
    EmbeddingSource,
    ModelSource,
    NewArrivalsSource,
    PopularSource,
    RecentlyViewedSource,
    RecommendRequest,
    Shopper,
)
from shopcast.serving.state import SessionStore
from shopcast.training.bundle import ModelBundle

__all__ = ["PUBLIC_SCENES", "SCENES", "RecommendPipeline", "RecommendRequest", "scene_weights"]

log = logging.getLogger(__name__)

#: Threads that run model-backed candidate sources (numpy/torch release the GIL).
_WORKERS = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="source")

#: Scenes and the sources each one uses, with their blend weights.
SCENES: dict[str, dict[str, float]] = {
    "home": {
        "covisit": 1.0,
        "recently_viewed": 0.5,
        "sequence": 0.8,
        "embedding": 0.7,
        "mf": 0.6,
        "buy_again": 0.6,
        "new_arrivals": 0.08,
        "category_popular": 0.15,
        "popular": 0.1,
    },
    "product_page": {
        "covisit": 1.0,
        "sequence": 0.5,
        "embedding": 0.3,
        "mf": 0.2,
        "bought_together": 0.5,
        "recently_viewed": 0.2,
        "category_popular": 0.3,
        "new_arrivals": 0.15,
        "popular": 0.05,
    },
    "cart": {
        "bought_together": 1.0,
        "covisit": 0.5,
        "sequence": 0.3,
        "category_popular": 0.1,
        "popular": 0.1,
    },
    "post_purchase": {"bought_together": 1.0, "covisit": 0.5, "buy_again": 0.3, "popular": 0.05},
    "search": {"popular": 1.0, "covisit": 0.5, "category_popular": 0.2},
    # scenes of dedicated endpoints
    "bought_together": {"bought_together": 1.0, "covisit": 0.3},
    "trending": {"popular": 1.0},
}
#: Scenes a caller may name in ``?scene=``.
PUBLIC_SCENES = ("home", "product_page", "cart", "post_purchase", "search")
#: Extra candidates fetched per source beyond k (room for filters and diversity).
HEADROOM = 50

_BECAUSE = {
    EVENT_CODES[EventType.VIEW]: "because you viewed {}",
    EVENT_CODES[EventType.CLICK]: "because you viewed {}",
    EVENT_CODES[EventType.ADD_TO_CART]: "because you added {} to your cart",
    EVENT_CODES[EventType.REMOVE_FROM_CART]: "because you looked at {}",
    EVENT_CODES[EventType.PURCHASE]: "because you bought {}",
    EVENT_CODES[EventType.RATE]: "because you rated {}",
    EVENT_CODES[EventType.FAVORITE]: "because you saved {}",
}


class RecommendPipeline:
    def __init__(
        self,
        bundle: ModelBundle,
        catalog: CatalogIndex,
        sessions: SessionStore,
        merchandising: MerchandisingSettings | None = None,
        *,
        content: ContentNeighbours | None = None,
        new_arrival_days: float = 30.0,
        profiles: UserStates | None = None,
        source_timeout_s: float = 0.05,
        recently_viewed_weight: float = 1.0,
        cache: ResultCache | None = None,
    ) -> None:
        merch = merchandising or MerchandisingSettings()
        self.source_timeout_s = source_timeout_s
        #: The scenes' blend weights, the "recently viewed" source's scaled by
        #: ``recently_viewed_weight`` (0 takes it out of every scene).
        self.scenes = scene_weights(recently_viewed_weight)
        self.bundle = bundle
        self.catalog = catalog
        self.sessions = sessions
        self.sources: dict[str, CandidateSource] = {
            s.name: s
            for s in (
                CovisitSource(bundle, "covisit"),
                CovisitSource(bundle, "bought_together"),
                CategoryPopularSource(bundle, catalog),
                PopularSource(bundle, catalog),
                BuyAgainSource(),
                RecentlyViewedSource(),
                NewArrivalsSource(bundle, catalog, content, new_arrival_days),
                ModelSource(bundle, "sequence"),
                EmbeddingSource(bundle, "embedding"),
                FactorSource(bundle, catalog),
            )
        }
        self.rules: list[Rule] = [
            ExcludeSeen(catalog, merch),
            InStock(catalog),
            RequestFilters(catalog),
            Boosts(catalog, merch),
        ]
        self.rerank = MMR(catalog, merch.diversity)
        self.placements: list[Placement] = [Pins(catalog, merch), Sponsored(catalog, merch)]
        self.ranker = _rank_stage(bundle, catalog, profiles)
        #: Ranked lists per shopper (``result_cache.py``); None: every request computes.
        self.cache = cache

    def run(self, request: RecommendRequest, now: float) -> Recommendation:
        degraded: list[str] = []
        try:
            shopper = self.context(request, now, degraded)
            ranked, because, kept = self.ranked(shopper, request, degraded)
            diversity = self.rerank.diversity if isinstance(self.rerank, MMR) else None
            memo = (request.k, diversity) if kept is not None and diversity is not None else None
            packed = kept.slates.get(memo) if kept is not None and memo is not None else None
            found = _unpack(packed) if packed is not None else None
            if found is None:
                order = self.rerank(ranked, request.k)
                slate = [
                    Slot(int(ranked.items[p]), float(ranked.scores[p]), ranked.sources[p])
                    for p in order.tolist()
                ]
                for placement in self.placements:
                    slate = placement(slate, shopper, request)
                found = self.explain(shopper, slate, request, because)
                if kept is not None and memo is not None:
                    kept.slates[memo] = _pack(found)
            items = found
            self._remember_shown(request, items)
        except Exception:  # a model or rule bug must not become a 5xx
            log.exception("recommendation pipeline failed; serving popular items")
            degraded.append("pipeline")
            items = self._fallback(request, now)
        sources: dict[str, int] = {}
        for item in items:
            sources[item.source] = sources.get(item.source, 0) + 1
        return Recommendation(
            recommendation_id=uuid.uuid4().hex,
            user_id=request.user_id,
            session_id=request.session_id,
            scene=request.scene,
            page=request.page,
            model_version=self.bundle.version,
            items=items,
            sources=sources,
            degraded=degraded,
        )

    # -- stages -----------------------------------------------------------------

    def context(
        self, request: RecommendRequest, now: float, degraded: list[str] | None = None
    ) -> Shopper:
        subjects = []
        if request.user_id is not None:
            subjects.append(f"u:{request.user_id}")
        if request.session_id is not None:
            subjects.append(f"s:{request.session_id}")
        items: list[str] = []
        types: list[int] = []
        stamps: list[float] = []
        purchases: dict[str, list[float]] = {}
        cart: dict[str, float] = {}
        shown: list[str] = []
        for subject in subjects:
            live = self.sessions.get(subject)
            if live.degraded and degraded is not None and "live_state" not in degraded:
                degraded.append("live_state")  # shared state down: read from the log
            items.extend(live.items)
            types.extend(live.type_codes().tolist())
            stamps.extend(live.ts)
            for item, times in live.purchases.items():
                purchases[item] = sorted([*purchases.get(item, []), *times])
            cart.update(live.cart)
            if request.page > 1:
                shown.extend(live.shown.get(request.scene, []))
        vocab = self.bundle.items
        order = np.argsort(np.asarray(stamps, dtype=np.float64), kind="stable")
        recent = vocab.indices(items)[order] if items else np.empty(0, np.int64)
        known = recent >= 0
        context = Context(
            now=now,
            user_id=request.user_id,
            session_id=request.session_id,
            recent_items=recent[known],
            recent_types=np.asarray(types, dtype=np.int64)[order][known],
            recent_ts=np.asarray(stamps, dtype=np.float64)[order][known],
        )
        anchor_ids = list(request.items)
        if not anchor_ids and request.scene == "cart":
            anchor_ids = sorted(cart, key=cart.__getitem__, reverse=True)
        if not anchor_ids and request.scene == "post_purchase" and purchases:
            anchor_ids = [max(purchases, key=lambda i: purchases[i][-1])]
        return Shopper(
            context=context,
            purchases={
                i: t
                for i, t in zip(
                    vocab.indices(list(purchases)).tolist(), purchases.values(), strict=True
                )
                if i >= 0
            },
            cart=_known(vocab.indices(list(cart))),
            anchors=_known(vocab.indices(anchor_ids)),
            shown={i for i in vocab.indices(shown).tolist() if i >= 0},
        )

    def ranked(
        self, shopper: Shopper, request: RecommendRequest, degraded: list[str]
    ) -> tuple[Ranked, dict[str, tuple[IntArray, IntArray]], CachedRanking | None]:
        """candidates → rank → rules: the pool rerank picks from, the contributors of
        its co-visitation items (``Candidates.because``) for explain, and the cache
        entry when the pool is that entry's list as it is (nothing dropped).

        With the result cache (``result_cache.py``), a shopper whose live session,
        filters, catalog and model are as at an earlier request gets that request's
        list, less this request's shown items and ``exclude``."""
        cache = self.cache
        key: tuple[Hashable, ...] | None = None
        if cache is not None and not degraded and self._cacheable():
            key = cache_key(
                request,
                shopper,
                self._count(shopper, request),
                self.bundle.version,
                self.catalog.revision,
            )
            hit = cache.get(key)
            if hit is not None:
                drop = self._dropped(shopper, request)
                found = hit.for_request(drop, request.k)
                if found is not None:
                    return found, hit.because, None if drop.size else hit
        because: dict[str, tuple[IntArray, IntArray]] = {}
        already = len(degraded)
        candidates = self.candidates(shopper, request, degraded, because)
        ranked = self.rank(candidates, request, shopper, degraded)
        if key is None or cache is None or len(degraded) > already:
            return self.apply_rules(ranked, shopper, request), because, None
        # The rules without the page's shown items and the request's exclude list, kept;
        # those two are dropped per request (each rule keeps or scales items one by one).
        general = self.apply_rules(
            ranked, replace(shopper, shown=set()), replace(request, exclude=())
        )
        keep = rerank_depth(request.k) + len(shopper.shown) + EXCLUDE_MARGIN
        entry = CachedRanking.of(general, because, keep, time.monotonic())
        cache.put(key, entry, subjects_of(request))
        drop = self._dropped(shopper, request)
        found = entry.for_request(drop, request.k)
        if found is not None:  # the same picks as from ``general`` (rerank sorts stably)
            return found, entry.because, None if drop.size else entry
        return (
            (general.keep(~np.isin(general.items, drop)) if drop.size else general),
            because,
            None,
        )

    def apply_rules(self, ranked: Ranked, shopper: Shopper, request: RecommendRequest) -> Ranked:
        for rule in self.rules:
            ranked = rule(ranked, shopper, request)
        return ranked

    def _cacheable(self) -> bool:
        """The rules are the per-item ones the cache knows (not replaced or wrapped)."""
        return all(type(rule) in _PER_ITEM_RULES for rule in self.rules)

    def _count(self, shopper: Shopper, request: RecommendRequest) -> int:
        """Candidates asked of each source."""
        return request.k + len(shopper.purchases) + len(shopper.shown) + HEADROOM

    def _dropped(self, shopper: Shopper, request: RecommendRequest) -> IntArray:
        """The items ``ExcludeSeen`` drops for this request alone: shown on the earlier
        pages of the listing and the request's ``exclude``."""
        if not shopper.shown and not request.exclude:
            return np.empty(0, np.int64)
        out = set(shopper.shown)
        if request.exclude:
            found = self.catalog.vocab.indices(list(request.exclude)).tolist()
            out.update(i for i in found if i >= 0)
        return np.fromiter(out, np.int64, len(out))

    def candidates(
        self,
        shopper: Shopper,
        request: RecommendRequest,
        degraded: list[str],
        because: dict[str, tuple[IntArray, IntArray]] | None = None,
    ) -> dict[str, Ranked]:
        """Every source of the scene; model-backed ("heavy") sources run on worker threads
        under ``source_timeout_s``, so a slow model is skipped (named in ``degraded``)
        instead of holding the request, while the cheap sources run inline.

        ``because`` receives, per source that knows them, its items and the context
        item each was proposed because of (``Candidates.because``) for ``explain``."""
        n = self._count(shopper, request)
        scene = self.scenes[request.scene]
        names = [name for name in scene if name in self.sources]
        degraded.extend(name for name in scene if name not in self.sources)
        heavy = {
            name: _WORKERS.submit(self.sources[name], shopper, request, n)
            for name in names
            if getattr(self.sources[name], "heavy", False) and self._has_model(name)
        }
        found: dict[str, Candidates] = {}
        for name in names:
            if name in heavy or getattr(self.sources[name], "heavy", False):
                continue
            try:
                found[name] = self.sources[name](shopper, request, n)
            except Exception:
                log.exception("candidate source %s failed", name)
                degraded.append(name)
        deadline = time.perf_counter() + self.source_timeout_s
        for name, future in heavy.items():
            try:
                found[name] = future.result(timeout=max(0.0, deadline - time.perf_counter()))
            except concurrent.futures.TimeoutError:
                log.warning("candidate source %s timed out; skipped", name)
                degraded.append(name)
            except Exception:
                log.exception("candidate source %s failed", name)
                degraded.append(name)
        if because is not None:
            for name, got in found.items():
                if got.because is not None and got.items.size:
                    order = np.argsort(got.items, kind="stable")  # sorted for look-ups
                    because[name] = (got.items[order], got.because[order])
        return {
            name: Ranked(c.items, c.scores, [name] * c.items.size)
            for name in names
            if (c := found.get(name)) is not None and c.items.size
        }

    def _has_model(self, role: str) -> bool:
        return role in self.bundle.models

    def rank(
        self,
        candidates: dict[str, Ranked],
        request: RecommendRequest,
        shopper: Shopper | None = None,
        degraded: list[str] | None = None,
    ) -> Ranked:
        if not candidates:
            return Ranked(np.empty(0, np.int64), np.empty(0, np.float64), [])
        pool = np.unique(np.concatenate([c.items for c in candidates.values()]))
        weights = self.scenes[request.scene]
        parts = np.zeros((len(candidates), pool.shape[0]))
        names = list(candidates)
        for row, name in enumerate(names):
            found = candidates[name]
            top = float(found.scores.max())
            scaled = found.scores / top if top > 0 else np.zeros_like(found.scores)
            parts[row, np.searchsorted(pool, found.items)] = weights[name] * scaled
        best = parts.argmax(axis=0)
        if "recently_viewed" in candidates:  # the shopper's own items: credited as re-shown
            own = names.index("recently_viewed")
            best = np.where(parts[own] > 0, own, best)
        blended = Ranked(pool, parts.sum(axis=0), [names[b] for b in best.tolist()])
        if self.ranker is None or shopper is None or not self.ranker.serves(request.scene):
            return blended
        try:
            return self.ranker(candidates, blended, shopper, request, weights)
        except Exception:  # a ranker bug must not cost the request: serve the blend
            log.exception("learned ranker failed; serving the blend")
            if degraded is not None:
                degraded.append("ranker")
            return blended

    def explain(
        self,
        shopper: Shopper,
        slate: Sequence[Slot],
        request: RecommendRequest,
        because: Mapping[str, tuple[IntArray, IntArray]] | None = None,
    ) -> list[RecommendedItem]:
        """A reason per slot. ``because`` (from ``candidates``) gives the contributing
        context item of the co-visitation sources' items; the models are asked only
        for the slots it does not cover."""
        ctx = shopper.context
        anchored = shopper.anchors.size > 0
        basis = shopper.anchors[::-1] if anchored else ctx.recent_items
        basis_ctx = (
            Context(
                now=ctx.now,
                recent_items=basis,
                recent_types=ctx.recent_types,
                recent_ts=ctx.recent_ts,
            )
            if anchored
            else ctx
        )
        chosen = np.asarray([s.item for s in slate], dtype=np.int64)
        slot_sources = [s.source for s in slate]
        contributors = np.full(chosen.shape[0], -1, np.int64)
        if basis.size and chosen.size:
            # Only the slots a reason is built for: each model's contributors walk
            # the rows of every basis item, the costliest step of a request.
            together = self.bundle.bought_together
            for model, source in ((self.bundle.covisit, "covisit"), (together, "bought_together")):
                if source not in slot_sources:
                    continue
                use = np.asarray([s == source for s in slot_sources], dtype=bool)
                known = because.get(source) if because is not None else None
                if known is not None:
                    found = _lookup_sorted(known[0], known[1], chosen)
                    contributors[use & (found >= -1)] = found[use & (found >= -1)]
                    use &= found < -1  # not among the source's items: ask the model
                if model is not None and use.any():
                    contributors[use] = model.contributors(basis_ctx, chosen[use])
        catalog, vocab = self.catalog, self.bundle.items
        latest_category: str | None = None
        if "category_popular" in slot_sources:
            latest_category = catalog.latest_category(basis)
        # The shopper's latest event type per item, for "because you <did> X".
        last_type: dict[int, int] | None = None
        out: list[RecommendedItem] = []
        for pos, slot in enumerate(slate):
            source, contributor = slot.source, int(contributors[pos])
            if source in ("covisit", "bought_together") and contributor >= 0:
                title = catalog.title(contributor)
                if request.scene == "cart":
                    reason = f"goes with {title} in your cart"
                elif source == "bought_together":
                    reason = f"often bought together with {title}"
                elif anchored:
                    reason = f"often viewed with {title}"
                else:
                    if last_type is None:
                        last_type = dict(
                            zip(ctx.recent_items.tolist(), ctx.recent_types.tolist(), strict=True)
                        )
                    reason = _because_type(last_type.get(contributor)).format(title)
            elif source == "sequence":
                latest = int(basis[-1]) if basis.size else -1
                reason = (
                    f"what shoppers pick next after {catalog.title(latest)}"
                    if latest >= 0
                    else "picked for you"
                )
            elif source == "embedding":
                reason = "matches your taste" if basis.size else "picked for you"
            elif source == "new_arrivals":
                reason = "new arrival like what you viewed" if basis.size else "new arrival"
            elif source == "buy_again":
                reason = "time to buy again: you buy this regularly"
            elif source == "recently_viewed":
                in_cart = bool((shopper.cart == slot.item).any())
                reason = "still in your cart" if in_cart else "you viewed this recently"
            elif source == "sponsored":
                reason = slot.label or "sponsored"
            elif source == "pinned":
                reason = "featured"
            elif source == "category_popular" and latest_category is not None:
                reason = f"popular in {latest_category}"
            elif request.category:
                source, reason = "popular", f"popular in {request.category}"
            else:
                source, reason = "popular", "popular right now"
            item = catalog.get(slot.item)
            # Every field is built here with its type: no validation needed.
            out.append(
                RecommendedItem.model_construct(
                    item_id=vocab.id(slot.item),
                    score=round(slot.score, 6),
                    source=source,
                    reason=reason,
                    sponsored=slot.source == "sponsored",
                    title=item.title if item else None,
                    category=list(item.category) if item else [],
                    price=item.price if item else None,
                )
            )
        return out

    # -- helpers ----------------------------------------------------------------

    def _remember_shown(self, request: RecommendRequest, items: list[RecommendedItem]) -> None:
        if request.user_id is None and request.session_id is None:
            return
        subject = (
            f"u:{request.user_id}" if request.user_id is not None else f"s:{request.session_id}"
        )
        try:
            ids = [i.item_id for i in items]
            self.sessions.remember_shown(subject, request.scene, ids, request.page)
        except StateUnavailableError:  # shared state down: later pages may repeat items
            pass

    def _fallback(self, request: RecommendRequest, now: float) -> list[RecommendedItem]:
        try:
            top = self.bundle.popularity.top(request.k + HEADROOM)
            top = top[self.catalog.available(top)][: request.k]
            return [
                RecommendedItem(
                    item_id=self.bundle.items.id(int(i)),
                    score=0.0,
                    source="popular",
                    reason="popular right now",
                )
                for i in top.tolist()
            ]
        except Exception:
            log.exception("popularity fallback failed too")
            return []

    @staticmethod
    def _because(ctx: Context, item: int) -> str:
        """The phrase for the shopper's latest action on ``item``."""
        hits = np.flatnonzero(ctx.recent_items == item)
        return _because_type(int(ctx.recent_types[hits[-1]]) if hits.size else None)


#: The fields explain sets on each item (the others keep their defaults, unset).
_ITEM_FIELDS = ("item_id", "score", "source", "reason", "sponsored", "title", "category", "price")


def _pack(items: list[RecommendedItem]) -> list[tuple[Any, ...]]:
    """Explain's items as tuples (a kept answer: ~5x smaller than the models)."""
    return [tuple(getattr(item, f) for f in _ITEM_FIELDS) for item in items]


def _unpack(rows: list[tuple[Any, ...]]) -> list[RecommendedItem]:
    """The items ``_pack`` kept, as explain built them (fresh objects per response)."""
    out = []
    for row in rows:
        fields = dict(zip(_ITEM_FIELDS, row, strict=True))
        fields["category"] = list(fields["category"])
        out.append(RecommendedItem.model_construct(**fields))
    return out


def _because_type(code: int | None) -> str:
    """The phrase for an action of this event type code (a view when unknown)."""
    default = _BECAUSE[EVENT_CODES[EventType.VIEW]]
    return default if code is None else _BECAUSE.get(code, default)


#: Rules that keep, drop or scale each item on its own (the result cache relies on it).
_PER_ITEM_RULES = (ExcludeSeen, InStock, RequestFilters, Boosts)


def scene_weights(recently_viewed: float = 1.0) -> dict[str, dict[str, float]]:
    """``SCENES`` with the "recently viewed" source's weights scaled by
    ``recently_viewed`` (0: the source is left out of every scene)."""
    if recently_viewed < 0:
        raise ValueError(f"recently_viewed_weight must be >= 0, got {recently_viewed}")
    out: dict[str, dict[str, float]] = {}
    for scene, weights in SCENES.items():
        scaled = dict(weights)
        if "recently_viewed" in scaled:
            scaled["recently_viewed"] *= recently_viewed
            if scaled["recently_viewed"] == 0:
                del scaled["recently_viewed"]
        out[scene] = scaled
    return out


def _rank_stage(
    bundle: ModelBundle, catalog: CatalogIndex, profiles: UserStates | None
) -> RankStage | None:
    """The learned-ranker stage when the bundle has a usable ranker, else None (blend)."""
    ranker = bundle.models.get("ranker")
    if not isinstance(ranker, LearnedRanker):
        return None
    try:
        return RankStage(ranker, bundle, catalog, profiles)
    except Exception:
        log.exception("cannot use the bundle's learned ranker; ranking by the blend")
        return None


def _known(indices: np.ndarray) -> np.ndarray:
    return indices[indices >= 0]


def _lookup_sorted(keys: IntArray, values: IntArray, wanted: IntArray) -> IntArray:
    """``values`` at each ``wanted`` key in the sorted ``keys``; -2 where absent."""
    at = np.minimum(np.searchsorted(keys, wanted), max(keys.shape[0] - 1, 0))
    hit = keys[at] == wanted if keys.size else np.zeros(wanted.shape[0], dtype=bool)
    return np.where(hit, values[at] if keys.size else -2, -2).astype(np.int64)
