"""Business rules: filters and boosts on the ranked pool, placements on the final list.

Filters and boosts take a ``Ranked`` pool and return one; placements (pins and
sponsored slots) take the final ordered slate and put items at fixed positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress
from typing import Protocol

import numpy as np

from shopcast.config import MerchandisingSettings
from shopcast.models._base import BoolArray, FloatArray, IntArray
from shopcast.serving.catalog import CatalogIndex
from shopcast.serving.sources import RecommendRequest, Shopper


@dataclass(slots=True)
class Ranked:
    """Candidates with blended scores and the source that proposed each."""

    items: IntArray
    scores: FloatArray
    sources: list[str]

    def keep(self, mask: BoolArray) -> Ranked:
        if len(self.sources) != mask.shape[0]:
            raise ValueError(f"mask of {mask.shape[0]} for {len(self.sources)} candidates")
        return Ranked(
            self.items[mask],
            self.scores[mask],
            list(compress(self.sources, mask.tolist())),
        )


@dataclass(slots=True)
class Slot:
    """One entry of the final slate."""

    item: int
    score: float
    source: str
    label: str | None = None  # e.g. the campaign of a sponsored item


class Rule(Protocol):
    def __call__(self, ranked: Ranked, shopper: Shopper, request: RecommendRequest) -> Ranked: ...


class Placement(Protocol):
    def __call__(
        self, slate: list[Slot], shopper: Shopper, request: RecommendRequest
    ) -> list[Slot]: ...


def _isin(items: IntArray, members: set[int] | IntArray) -> BoolArray:
    ref = members if isinstance(members, np.ndarray) else np.fromiter(members, np.int64)
    return np.isin(items, ref) if ref.size else np.zeros(items.shape[0], dtype=bool)


def _mask_at(mask: BoolArray, items: IntArray) -> BoolArray:
    """``mask[items]`` where items beyond the mask are False."""
    inside: BoolArray = items < mask.shape[0]
    return inside & mask[np.where(inside, items, 0)]


class ExcludeSeen:
    """Drop what the shopper should not see again.

    Purchased items go (except under ``rebuy_categories`` or when proposed by the
    buy-again source), as do the request's ``exclude`` list, the scene's own items
    (the product on the page, the cart's content on the cart page) and, from page 2
    on, items shown on the earlier pages of the same listing. Items still in the
    shopper's cart go too, except in the ``cart_scenes`` (default: home, where
    shoppers of a view-heavy shop go back to what they put in the cart).
    """

    def __init__(self, catalog: CatalogIndex, settings: MerchandisingSettings) -> None:
        self.catalog = catalog
        self.rebuy = [c for c in settings.rebuy_categories if c.strip()]
        self.cart_scenes = frozenset(settings.cart_scenes)

    def __call__(self, ranked: Ranked, shopper: Shopper, request: RecommendRequest) -> Ranked:
        vocab = self.catalog.vocab
        purchased = _isin(ranked.items, set(shopper.purchases))
        if self.rebuy:
            consumable = np.zeros(ranked.items.shape[0], dtype=bool)
            for category in self.rebuy:
                consumable |= _mask_at(self.catalog.category_mask(category), ranked.items)
            purchased &= ~consumable
        if "buy_again" in ranked.sources:
            purchased &= np.asarray([s != "buy_again" for s in ranked.sources], dtype=bool)
        drop = purchased | _isin(ranked.items, shopper.anchors)
        if request.scene not in self.cart_scenes:
            drop |= _isin(ranked.items, shopper.cart)
        explicit = {i for i in vocab.indices(list(request.exclude)).tolist() if i >= 0}
        drop |= _isin(ranked.items, explicit | shopper.shown)
        return ranked.keep(~drop)


class InStock:
    def __init__(self, catalog: CatalogIndex) -> None:
        self.catalog = catalog

    def __call__(self, ranked: Ranked, shopper: Shopper, request: RecommendRequest) -> Ranked:
        return ranked.keep(self.catalog.available(ranked.items))


class RequestFilters:
    """The request's category, brand and price range."""

    def __init__(self, catalog: CatalogIndex) -> None:
        self.catalog = catalog

    def __call__(self, ranked: Ranked, shopper: Shopper, request: RecommendRequest) -> Ranked:
        keep = np.ones(ranked.items.shape[0], dtype=bool)
        if request.category:
            keep &= _mask_at(self.catalog.category_mask(request.category), ranked.items)
        if request.brand:
            keep &= _mask_at(self.catalog.attribute_mask("brand", request.brand), ranked.items)
        if request.price_min is not None or request.price_max is not None:
            prices = self.catalog.prices(ranked.items)
            low = -np.inf if request.price_min is None else request.price_min
            high = np.inf if request.price_max is None else request.price_max
            keep &= (prices >= low) & (prices <= high)  # unknown prices (NaN) fail
        return ranked.keep(keep)


class Boosts:
    """Merchandiser boosts: multiply the score of matching items."""

    def __init__(self, catalog: CatalogIndex, settings: MerchandisingSettings) -> None:
        self.catalog = catalog
        self.boosts = settings.boosts

    def __call__(self, ranked: Ranked, shopper: Shopper, request: RecommendRequest) -> Ranked:
        if not self.boosts:
            return ranked
        factor = np.ones(ranked.items.shape[0])
        for boost in self.boosts:
            if boost.category is not None:
                hit = _mask_at(self.catalog.category_mask(boost.category), ranked.items)
            elif boost.brand is not None:
                hit = _mask_at(self.catalog.attribute_mask("brand", boost.brand), ranked.items)
            else:
                hit = ranked.items == self.catalog.vocab.index(boost.item_id or "")
            factor[hit] *= boost.factor
        return Ranked(ranked.items, ranked.scores * factor, ranked.sources)


def _place(slate: list[Slot], slot: Slot, position: int) -> list[Slot]:
    """Insert at a 1-based position (or at the end when the slate is shorter)."""
    out = [s for s in slate if s.item != slot.item]
    out.insert(min(position - 1, len(out)), slot)
    return out


class Pins:
    """Merchandiser pins: an in-stock item at a fixed position in the given scenes."""

    def __init__(self, catalog: CatalogIndex, settings: MerchandisingSettings) -> None:
        self.catalog = catalog
        self.pins = sorted(settings.pins, key=lambda p: p.position)

    def __call__(
        self, slate: list[Slot], shopper: Shopper, request: RecommendRequest
    ) -> list[Slot]:
        for pin in self.pins:
            if pin.scenes and request.scene not in pin.scenes:
                continue
            idx = self.catalog.vocab.index(pin.item_id)
            if idx < 0 or not self.catalog.available(np.array([idx]))[0]:
                continue
            slate = _place(slate, Slot(idx, 0.0, "pinned"), pin.position)
        return slate[: request.k]


class Sponsored:
    """Ad slots: campaign items at configured positions, labelled as sponsored.

    A campaign item is skipped when it is out of stock, already bought, excluded,
    or the scene's own item; the slate keeps ``k`` entries.
    """

    def __init__(self, catalog: CatalogIndex, settings: MerchandisingSettings) -> None:
        self.catalog = catalog
        self.campaigns = settings.campaigns

    def __call__(
        self, slate: list[Slot], shopper: Shopper, request: RecommendRequest
    ) -> list[Slot]:
        blocked = set(shopper.purchases) | set(shopper.anchors.tolist())
        blocked |= set(shopper.cart.tolist())
        blocked |= {i for i in self.catalog.vocab.indices(list(request.exclude)).tolist()}
        for campaign in self.campaigns:
            if campaign.scenes and request.scene not in campaign.scenes:
                continue
            candidates = [
                i
                for i in self.catalog.vocab.indices(campaign.item_ids).tolist()
                if i >= 0 and i not in blocked
            ]
            candidates = [i for i in candidates if self.catalog.available(np.array([i]))[0]]
            for position, idx in zip(sorted(campaign.positions), candidates, strict=False):
                if position <= request.k:
                    slot = Slot(idx, 0.0, "sponsored", label=campaign.label)
                    slate = _place(slate, slot, position)
                    blocked.add(idx)
        return slate[: request.k]
