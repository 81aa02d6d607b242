"""The few facts about an item that a user profile reads, with category price medians.

- categories: every level of the item's category path as a key ``"A"``, ``"A > B"``, …
  (level = number of ``" > "`` in the key); an item without a path uses
  ``attributes["genres"]`` (MovieLens) as level-0 keys;
- brand, price, original price, ``discounted`` (``Item.discount`` > 0);
- ``ref_price``: the median catalog price of the items with the same full category
  path, or of all priced items when the item has no path (``None`` when nothing is
  priced). Medians are computed when the table is (re)built, not on every upsert.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from shopcast.domain import Item

SEP = " > "
_UNIT = "\x1f"  # joins category keys in ``frame``: a control character, not in real names


@dataclass(frozen=True, slots=True)
class ItemInfo:
    categories: tuple[str, ...] = ()
    brand: str | None = None
    price: float | None = None
    original_price: float | None = None
    discounted: bool = False
    ref_price: float | None = None


#: What an event on an item the catalog does not know reads.
UNKNOWN_ITEM = ItemInfo()


def category_keys(item: Item) -> tuple[str, ...]:
    """Path prefixes of the item's category (``A``, ``A > B``), else its genres."""
    if item.category:
        return tuple(SEP.join(item.category[: i + 1]) for i in range(len(item.category)))
    genres = item.attributes.get("genres")
    if isinstance(genres, list):
        return tuple(dict.fromkeys(str(g).strip() for g in genres if str(g).strip()))
    return ()


def level(key: str) -> int:
    """Depth of a category key (0 = top level)."""
    return key.count(SEP)


class ItemTable:
    """``ItemInfo`` per item id, built from catalog items."""

    def __init__(self, items: Iterable[Item] = ()) -> None:
        self._items: dict[str, Item] = {}
        self._info: dict[str, ItemInfo] = {}
        self._medians: dict[str, float] = {}
        self._global: float | None = None
        self.rebuild(items)

    def rebuild(self, items: Iterable[Item] = ()) -> None:
        """Add ``items`` and recompute every category median and ``ItemInfo``."""
        for item in items:
            self._items[item.item_id] = item
        by_path: dict[str, list[float]] = {}
        every: list[float] = []
        for item in self._items.values():
            if item.price is None:
                continue
            every.append(item.price)
            if item.category:
                by_path.setdefault(SEP.join(item.category), []).append(item.price)
        self._medians = {k: statistics.median(v) for k, v in by_path.items()}
        self._global = statistics.median(every) if every else None
        self._info = {i: self._make(item) for i, item in self._items.items()}

    def upsert(self, items: Iterable[Item]) -> None:
        """Add or replace items; category medians keep their last rebuilt values."""
        for item in items:
            self._items[item.item_id] = item
            self._info[item.item_id] = self._make(item)

    def delete(self, item_id: str) -> None:
        self._items.pop(item_id, None)
        self._info.pop(item_id, None)

    def info(self, item_id: str) -> ItemInfo:
        return self._info.get(item_id, UNKNOWN_ITEM)

    def _make(self, item: Item) -> ItemInfo:
        ref = self._medians.get(SEP.join(item.category)) if item.category else self._global
        discount = item.discount
        return ItemInfo(
            categories=category_keys(item),
            brand=item.brand,
            price=item.price,
            original_price=item.original_price,
            discounted=discount is not None and discount > 0,
            ref_price=ref if ref else None,
        )

    def frame(self) -> pl.DataFrame:
        """One row per item: ``item_id, categories, brand, item_price, original_price,
        discounted, ref_price`` (for joins in the batch path)."""
        ids = list(self._info)
        infos = [self._info[i] for i in ids]
        frame = pl.DataFrame(
            {
                "item_id": ids,
                # joined then split: much faster than building a column from Python lists
                "categories": [_UNIT.join(x.categories) or None for x in infos],
                "brand": [x.brand for x in infos],
                "item_price": [x.price for x in infos],
                "original_price": [x.original_price for x in infos],
                "discounted": [x.discounted for x in infos],
                "ref_price": [x.ref_price for x in infos],
            },
            schema={
                "item_id": pl.String,
                "categories": pl.String,
                "brand": pl.String,
                "item_price": pl.Float64,
                "original_price": pl.Float64,
                "discounted": pl.Boolean,
                "ref_price": pl.Float64,
            },
        )
        return frame.with_columns(pl.col("categories").str.split(_UNIT))
