"""The catalog as the serving pipeline needs it: arrays over the item vocabulary.

Items that appear in events but not in the catalog are still recommendable (shops
often send events before the catalog feed); they simply have no title or category.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from shopcast.domain import Item
from shopcast.models._base import BoolArray, FloatArray, IntArray, Vocabulary


class CatalogIndex:
    """Item metadata by vocabulary index, plus cached per-category masks."""

    def __init__(self, items: Vocabulary) -> None:
        self.vocab = items
        self._meta: dict[int, Item] = {}
        self._out_of_stock: set[int] = set()
        self._masks: dict[str, BoolArray] = {}
        #: Items by lower-cased category level, built on first use (a mask costs one
        #: assignment instead of a pass over the whole catalog per category).
        self._by_level: dict[str, IntArray] | None = None
        self._newest: tuple[FloatArray, IntArray] | None = None  # created_at desc, cached
        self._lock = threading.Lock()
        #: Bumped by every upsert/delete (features cached per item know when to refresh).
        self.revision = 0

    def upsert(self, items: Iterable[Item]) -> None:
        with self._lock:
            for item in items:
                idx = self.vocab.add(item.item_id)
                self._meta[idx] = item
                if item.in_stock:
                    self._out_of_stock.discard(idx)
                else:
                    self._out_of_stock.add(idx)
            self._masks.clear()
            self._by_level = None
            self._newest = None
            self.revision += 1

    def delete(self, item_id: str) -> None:
        idx = self.vocab.index(item_id)
        with self._lock:
            if self._meta.pop(idx, None) is not None:
                self._out_of_stock.discard(idx)
                self._masks.clear()
                self._by_level = None
                self._newest = None
                self.revision += 1

    def get(self, idx: int) -> Item | None:
        return self._meta.get(idx)

    def created_at(self, idx: int) -> float:
        item = self._meta.get(idx)
        return float(item.created_at) if item is not None and item.created_at else 0.0

    def title(self, idx: int) -> str:
        item = self._meta.get(idx)
        return item.title if item is not None and item.title else self.vocab.id(idx)

    def category_of(self, idx: int) -> list[str]:
        item = self._meta.get(idx)
        return item.category if item is not None else []

    def created_since(self, since: float) -> IntArray:
        """Items created at or after ``since``, newest first."""
        with self._lock:
            if self._newest is None:
                dated = [(i.created_at, idx) for idx, i in self._meta.items() if i.created_at]
                dated.sort(key=lambda d: -d[0])
                self._newest = (
                    np.asarray([d[0] for d in dated], dtype=np.float64),
                    np.asarray([d[1] for d in dated], dtype=np.int64),
                )
            stamps, items = self._newest
        return items[: int(np.searchsorted(-stamps, -since, side="right"))]

    def latest_category(self, recent: IntArray) -> str | None:
        """The leaf category of the most recent item that has one."""
        for idx in recent[::-1].tolist():
            path = self.category_of(idx)
            if path:
                return path[-1]
        return None

    def attribute_mask(self, field: str, value: str) -> BoolArray:
        """Items whose ``brand`` (or other text field) equals ``value`` (case-insensitive)."""
        key = f"{field}={value.strip().lower()}"
        with self._lock:
            mask = self._masks.get(key)
            if mask is None or mask.shape[0] != len(self.vocab):
                mask = np.zeros(len(self.vocab), dtype=bool)
                for idx, item in self._meta.items():
                    found = getattr(item, field, None)
                    if isinstance(found, str) and found.lower() == key.split("=", 1)[1]:
                        mask[idx] = True
                self._masks[key] = mask
            return mask

    def prices(self, candidates: IntArray) -> FloatArray:
        """Price per candidate; NaN where unknown."""
        out = np.full(candidates.shape[0], np.nan)
        for pos, idx in enumerate(candidates.tolist()):
            item = self._meta.get(idx)
            if item is not None and item.price is not None:
                out[pos] = item.price
        return out

    def category_mask(self, category: str) -> BoolArray:
        """Items whose category path contains ``category`` at any level (case-insensitive)."""
        key = category.strip().lower()
        with self._lock:
            n = len(self.vocab)
            mask = self._masks.get(key)
            if mask is not None and mask.shape[0] < n:
                # The vocabulary grew through events: the new items have no catalog
                # record here (an upsert would have cleared the cache), so no category.
                mask = np.concatenate([mask, np.zeros(n - mask.shape[0], dtype=bool)])
                self._masks[key] = mask
            elif mask is None or mask.shape[0] != n:
                if self._by_level is None:
                    found: dict[str, list[int]] = {}
                    for idx, item in self._meta.items():
                        for level in {level.lower() for level in item.category}:
                            found.setdefault(level, []).append(idx)
                    self._by_level = {k: np.asarray(v, np.int64) for k, v in found.items()}
                mask = np.zeros(n, dtype=bool)
                members = self._by_level.get(key)
                if members is not None:
                    mask[members[members < n]] = True
                self._masks[key] = mask
            return mask

    def available(self, candidates: IntArray) -> BoolArray:
        """False for items known to be out of stock."""
        if not self._out_of_stock:
            return np.ones(candidates.shape[0], dtype=bool)
        out = np.fromiter(self._out_of_stock, np.int64, len(self._out_of_stock))
        return ~np.isin(candidates, out)
