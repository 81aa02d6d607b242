"""The online recommendation pipeline, as named stages.

    context → candidates → rank → rules → explain

- **context**: the live sessions of the user and/or anonymous session (recent items,
  purchases), merged in time order.
- **candidates**: each source proposes items: ``covisit`` (neighbours of the recent
  items), ``category_popular`` (popular in the category of the latest item),
  ``popular`` (time-decayed popularity, within the requested category if any).
- **rank**: a blend of normalized co-visitation and popularity scores.
- **rules**: drop purchased items, the request's ``exclude`` list, out-of-stock items
  and items outside the requested category.
- **explain**: a reason per item ("because you viewed X", "popular in Y").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from shopcast.domain import EventType, Recommendation, RecommendedItem
from shopcast.models._base import EVENT_CODES, BoolArray, Context, FloatArray, IntArray
from shopcast.serving.catalog import CatalogIndex
from shopcast.serving.state import MemorySessions
from shopcast.training.bundle import ModelBundle

#: Weights of the blend in the rank stage (co-visitation dominates; popularity breaks ties).
COVISIT_WEIGHT = 1.0
POPULAR_WEIGHT = 0.1
CATEGORY_WEIGHT = 0.05
#: How many of the latest session items seed co-visitation candidates, and neighbours each.
SEED_ITEMS = 5
NEIGHBOURS_PER_SEED = 50

_BECAUSE = {
    EVENT_CODES[EventType.VIEW]: "because you viewed {}",
    EVENT_CODES[EventType.CLICK]: "because you viewed {}",
    EVENT_CODES[EventType.ADD_TO_CART]: "because you added {} to your cart",
    EVENT_CODES[EventType.REMOVE_FROM_CART]: "because you looked at {}",
    EVENT_CODES[EventType.PURCHASE]: "because you bought {}",
    EVENT_CODES[EventType.RATE]: "because you rated {}",
    EVENT_CODES[EventType.FAVORITE]: "because you saved {}",
}


@dataclass(frozen=True, slots=True)
class RecommendRequest:
    user_id: str | None = None
    session_id: str | None = None
    k: int = 10
    category: str | None = None
    exclude: tuple[str, ...] = ()


@dataclass(slots=True)
class Shopper:
    """Output of the context stage."""

    context: Context
    excluded: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Ranked:
    """Candidates with their blended scores and the source that proposed each."""

    items: IntArray
    scores: FloatArray
    sources: list[str]

    def keep(self, mask: BoolArray) -> Ranked:
        return Ranked(
            self.items[mask],
            self.scores[mask],
            [s for s, m in zip(self.sources, mask, strict=True) if m],
        )


class RecommendPipeline:
    def __init__(
        self, bundle: ModelBundle, catalog: CatalogIndex, sessions: MemorySessions
    ) -> None:
        self.bundle = bundle
        self.catalog = catalog
        self.sessions = sessions

    def run(self, request: RecommendRequest, now: float) -> Recommendation:
        shopper = self.context(request, now)
        candidates = self.candidates(shopper, request)
        ranked = self.rules(self.rank(shopper, candidates), shopper, request)
        order = np.argsort(-ranked.scores, kind="stable")[: request.k]
        items = self.explain(shopper, ranked, order, request)
        sources: dict[str, int] = {}
        for item in items:
            sources[item.source] = sources.get(item.source, 0) + 1
        return Recommendation(
            recommendation_id=uuid.uuid4().hex,
            user_id=request.user_id,
            session_id=request.session_id,
            model_version=self.bundle.version,
            items=items,
            sources=sources,
        )

    # -- stages -----------------------------------------------------------------

    def context(self, request: RecommendRequest, now: float) -> Shopper:
        subjects = []
        if request.user_id is not None:
            subjects.append(f"u:{request.user_id}")
        if request.session_id is not None:
            subjects.append(f"s:{request.session_id}")
        items: list[str] = []
        types: list[int] = []
        stamps: list[float] = []
        purchased: set[str] = set()
        for subject in subjects:
            live = self.sessions.get(subject)
            items.extend(live.items)
            types.extend(live.type_codes().tolist())
            stamps.extend(live.ts)
            purchased |= live.purchased
        order = np.argsort(np.asarray(stamps, dtype=np.float64), kind="stable")
        vocab = self.bundle.items
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
        excluded = {i for i in vocab.indices([*purchased, *request.exclude]).tolist() if i >= 0}
        return Shopper(context, excluded)

    def candidates(self, shopper: Shopper, request: RecommendRequest) -> dict[str, IntArray]:
        pop = self.bundle.popularity
        n = request.k + len(shopper.excluded) + 50
        out: dict[str, IntArray] = {}
        seeds = _latest_unique(shopper.context.recent_items, SEED_ITEMS)
        if seeds.size:
            neighbours = [
                self.bundle.covisit.neighbors(int(s), NEIGHBOURS_PER_SEED)[0] for s in seeds
            ]
            out["covisit"] = np.unique(np.concatenate(neighbours))
            category = self._latest_category(shopper.context.recent_items)
            if category is not None:
                out["category_popular"] = pop.top(n, mask=self.catalog.category_mask(category))
        mask = self.catalog.category_mask(request.category) if request.category else None
        out["popular"] = pop.top(n, mask=mask)
        return out

    def rank(self, shopper: Shopper, candidates: dict[str, IntArray]) -> Ranked:
        pool = np.unique(np.concatenate(list(candidates.values())))
        ctx = shopper.context
        covis = self.bundle.covisit.score(ctx, pool)
        popular = self.bundle.popularity.score(ctx, pool)
        in_category = np.isin(pool, candidates.get("category_popular", np.empty(0, np.int64)))
        scores = (
            COVISIT_WEIGHT * _normalized(covis)
            + POPULAR_WEIGHT * _normalized(popular)
            + CATEGORY_WEIGHT * in_category
        )
        sources = [
            "covisit" if c > 0 else ("category_popular" if cat else "popular")
            for c, cat in zip(covis.tolist(), in_category.tolist(), strict=True)
        ]
        return Ranked(pool, scores, sources)

    def rules(self, ranked: Ranked, shopper: Shopper, request: RecommendRequest) -> Ranked:
        keep = self.catalog.available(ranked.items)
        if shopper.excluded:
            keep &= ~np.isin(ranked.items, np.fromiter(shopper.excluded, np.int64))
        if request.category:
            mask = self.catalog.category_mask(request.category)
            inside = ranked.items < mask.shape[0]
            keep &= inside & mask[np.where(inside, ranked.items, 0)]
        return ranked.keep(keep)

    def explain(
        self, shopper: Shopper, ranked: Ranked, order: IntArray, request: RecommendRequest
    ) -> list[RecommendedItem]:
        ctx = shopper.context
        chosen = ranked.items[order]
        contributors = (
            self.bundle.covisit.contributors(ctx, chosen)
            if ctx.recent_items.size
            else np.full(chosen.shape[0], -1, np.int64)
        )
        latest_category = self._latest_category(ctx.recent_items)
        out: list[RecommendedItem] = []
        for pos, idx in zip(order.tolist(), chosen.tolist(), strict=True):
            source = ranked.sources[pos]
            contributor = int(contributors[len(out)])
            if source == "covisit" and contributor >= 0:
                reason = self._because(ctx, contributor).format(self.catalog.title(contributor))
            elif source == "category_popular" and latest_category is not None:
                reason = f"popular in {latest_category}"
            elif request.category:
                reason = f"popular in {request.category}"
            else:
                source = "popular" if source == "covisit" else source
                reason = "popular right now"
            item = self.catalog.get(idx)
            out.append(
                RecommendedItem(
                    item_id=self.bundle.items.id(idx),
                    score=round(float(ranked.scores[pos]), 6),
                    source=source,
                    reason=reason,
                    title=item.title if item else None,
                    category=item.category if item else [],
                    price=item.price if item else None,
                )
            )
        return out

    # -- helpers ----------------------------------------------------------------

    def _latest_category(self, recent: IntArray) -> str | None:
        for idx in recent[::-1].tolist():
            path = self.catalog.category_of(idx)
            if path:
                return path[-1]
        return None

    @staticmethod
    def _because(ctx: Context, item: int) -> str:
        """The phrase for the shopper's latest action on ``item``."""
        hits = np.flatnonzero(ctx.recent_items == item)
        default = _BECAUSE[EVENT_CODES[EventType.VIEW]]
        return _BECAUSE.get(int(ctx.recent_types[hits[-1]]), default) if hits.size else default


def _latest_unique(recent: IntArray, n: int) -> IntArray:
    """The ``n`` most recent distinct items, most recent first."""
    out: list[int] = []
    for idx in recent[::-1].tolist():
        if idx not in out:
            out.append(idx)
            if len(out) == n:
                break
    return np.asarray(out, dtype=np.int64)


def _normalized(scores: FloatArray) -> FloatArray:
    top = float(scores.max()) if scores.size else 0.0
    return scores / top if top > 0 else np.zeros_like(scores)
