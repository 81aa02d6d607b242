"""Where the items of a push come from: the serving pipeline (``EngineItems``), or, in
the offline replay, the catalog and live popularity (``CatalogItems``).

``ItemSource`` is the trigger's view of the shop: describe items (title, price,
category, stock), recommend for a user in a scene with anchors and filters, and rank
users for a target (the targeting API).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from shopcast.domain import Event, EventType, Item
from shopcast.push.messages import PushItem

if TYPE_CHECKING:
    from shopcast.serving.engine import Engine


@dataclass(frozen=True, slots=True)
class TargetQuery:
    """Who to reach: an item, a category and/or brand, or a text (the targeting API's
    target; ``features.targeting.TargetingQuery`` without the filters)."""

    item_id: str | None = None
    category: str | None = None
    brand: str | None = None
    text: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class ItemInfo:
    item_id: str
    title: str | None = None
    price: float | None = None
    original_price: float | None = None
    category: tuple[str, ...] = ()
    brand: str | None = None
    stock: int | None = None
    created_at: float | None = None

    @classmethod
    def of(cls, item: Item) -> ItemInfo:
        return cls(
            item.item_id,
            item.title,
            item.price,
            item.original_price,
            tuple(item.category),
            item.brand,
            item.stock,
            item.created_at,
        )

    @property
    def leaf(self) -> str | None:
        return self.category[-1] if self.category else None

    def push_item(self, reason: str) -> PushItem:
        return PushItem(self.item_id, self.title, self.price, reason)


class ItemSource(Protocol):
    def describe(self, item_ids: Sequence[str]) -> dict[str, ItemInfo]: ...

    def recommend(
        self,
        user_id: str,
        *,
        scene: str,
        now: float,
        anchors: Sequence[str] = (),
        category: str | None = None,
        brand: str | None = None,
        exclude: Sequence[str] = (),
        k: int = 4,
    ) -> list[PushItem]: ...

    def target(self, query: TargetQuery, *, min_score: float) -> list[tuple[str, float, str]]:
        """``(user_id, score, reason)`` best first, only users who allow ``push``."""
        ...


class EngineItems:
    """The serving engine's pipeline and catalog (no impressions are logged for pushes)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self, item_ids: Sequence[str]) -> dict[str, ItemInfo]:
        items = self.engine.store.items.get_many(list(dict.fromkeys(item_ids)))
        return {k: ItemInfo.of(v) for k, v in items.items()}

    def recommend(
        self,
        user_id: str,
        *,
        scene: str,
        now: float,
        anchors: Sequence[str] = (),
        category: str | None = None,
        brand: str | None = None,
        exclude: Sequence[str] = (),
        k: int = 4,
    ) -> list[PushItem]:
        from shopcast.serving.pipeline import RecommendRequest

        request = RecommendRequest(
            user_id=user_id,
            k=k,
            scene=scene,
            category=category,
            brand=brand,
            exclude=tuple(exclude),
            items=tuple(anchors),
        )
        engine = self.engine
        with engine._lock:  # the pipeline directly: a push is not an impression
            rec = engine.pipeline.run(engine._impersonal(request), now)
            out = [PushItem(i.item_id, i.title, i.price, i.reason) for i in rec.items]
            if len(out) < k and category is not None:  # cold start: more of the category
                out += self._in_category(
                    category, k - len(out), {*exclude, *anchors, *(i.item_id for i in out)}
                )
        return out

    def _in_category(self, category: str, k: int, skip: set[str]) -> list[PushItem]:
        catalog = self.engine.catalog
        members = np.flatnonzero(catalog.category_mask(category))
        members = members[catalog.available(members)]
        out = []
        for idx in members.tolist():
            item = catalog.get(idx)
            if item is None or item.item_id in skip:
                continue
            out.append(PushItem(item.item_id, item.title, item.price, f"more in {category}"))
            if len(out) == k:
                break
        return out

    def target(self, query: TargetQuery, *, min_score: float) -> list[tuple[str, float, str]]:
        from shopcast.features.targeting import TargetingQuery

        q = TargetingQuery(
            item_id=query.item_id,
            category=query.category,
            brand=query.brand,
            text=query.text,
            limit=query.limit,
        )
        result = self.engine.target(q)
        return [(u.user_id, u.score, u.reason) for u in result.users if u.score >= min_score]


_WEIGHT = {EventType.VIEW: 1, EventType.ADD_TO_CART: 3, EventType.PURCHASE: 5}


class CatalogItems:
    """For the offline replay: items described from a catalog; recommendations are the
    most viewed/bought items of the anchor's (or asked) category so far, then overall.
    Targeting ranks users by their events in the target category."""

    def __init__(self, items: Sequence[Item]) -> None:
        self.catalog = {i.item_id: ItemInfo.of(i) for i in items}
        self.by_category: dict[str, Counter[str]] = defaultdict(Counter)
        self.overall: Counter[str] = Counter()
        self.user_categories: dict[str, Counter[str]] = defaultdict(Counter)

    def observe(self, events: Sequence[Event]) -> None:
        for e in events:
            w = _WEIGHT.get(e.type, 0)
            if not w or e.item_id is None:
                continue
            info = self.catalog.get(e.item_id)
            self.overall[e.item_id] += w
            if info is not None and info.leaf is not None:
                self.by_category[info.leaf][e.item_id] += w
                if e.user_id is not None:
                    self.user_categories[e.user_id][info.leaf] += w

    def describe(self, item_ids: Sequence[str]) -> dict[str, ItemInfo]:
        return {i: self.catalog[i] for i in item_ids if i in self.catalog}

    def recommend(
        self,
        user_id: str,
        *,
        scene: str,
        now: float,
        anchors: Sequence[str] = (),
        category: str | None = None,
        brand: str | None = None,
        exclude: Sequence[str] = (),
        k: int = 4,
    ) -> list[PushItem]:
        skip = {*exclude, *anchors}
        cats = [category] if category else []
        cats += [c.leaf for a in anchors if (c := self.catalog.get(a)) and c.leaf]
        out: list[PushItem] = []
        for cat in dict.fromkeys(cats):
            for item_id, _ in self.by_category[cat].most_common(k + len(skip)):
                if len(out) < k and item_id not in skip:
                    out.append(self.catalog[item_id].push_item(f"popular in {cat}"))
                    skip.add(item_id)
        if len(out) < k and category is None:
            for item_id, _ in self.overall.most_common(k + len(skip)):
                if len(out) < k and item_id not in skip and item_id in self.catalog:
                    out.append(self.catalog[item_id].push_item("popular now"))
                    skip.add(item_id)
        return out

    def target(self, query: TargetQuery, *, min_score: float) -> list[tuple[str, float, str]]:
        cat = query.category
        if cat is None and query.item_id in self.catalog:
            cat = self.catalog[query.item_id].leaf
        if cat is None:
            return []
        scored = []
        for user, counts in self.user_categories.items():
            total = sum(counts.values())
            share = counts[cat] / total if total else 0.0
            if share >= min_score and share > 0:
                scored.append((user, share, f"{share:.0%} of activity in {cat}"))
        scored.sort(key=lambda x: (-x[1], x[0]))
        return scored[: query.limit]
