"""The catalog's item features in service, kept current item by item.

``LiveItemFeatures.rebuild(items)`` fits ``ItemFeatures`` and ``ContentSimilarity`` on the
whole catalog; the serving engine calls it when it starts or swaps a bundle. Then:

- ``upsert`` indexes new or changed items at once with the fitted state (a new item
  has content neighbours before any event); when the catalog has grown by
  ``refit_growth`` (20 %) since the last fit, or from empty, everything is refitted, so
  TF-IDF learns the new words and price groups their new members;
- duplicate groups (normalized title + brand) are tracked live on every change;
- ``describe`` gives the inspectable features of one item, ``matrix`` the numeric
  matrix over a vocabulary.

Thread-safe (one lock).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any, Self

from shopcast.domain import Item
from shopcast.features.items import MISSING_FIELDS, ItemFeatures, duplicate_key
from shopcast.features.similarity import ContentSimilarity
from shopcast.models._base import FloatArray, Vocabulary


class LiveItemFeatures:
    """``ItemFeatures`` + ``ContentSimilarity`` over the live catalog."""

    def __init__(
        self,
        *,
        text_backend: str = "tfidf",
        low_stock_threshold: int = 5,
        min_group_size: int = 5,
        refit_growth: float = 0.2,
        top_terms: int = 5,
    ) -> None:
        self.text_backend = text_backend
        self.low_stock_threshold = low_stock_threshold
        self.min_group_size = min_group_size
        self.refit_growth = refit_growth
        self.top_terms = top_terms
        self._lock = threading.RLock()
        self._items: dict[str, Item] = {}
        self._keys: dict[str, str] = {}  # item id -> duplicate key
        self._groups: dict[str, set[str]] = {}  # duplicate key -> item ids
        self._fitted_n = 0
        self._added = 0
        self.features = self._new_features().fit([])
        self.content = ContentSimilarity(text_backend).fit([])

    def _new_features(self) -> ItemFeatures:
        return ItemFeatures(
            low_stock_threshold=self.low_stock_threshold, min_group_size=self.min_group_size
        )

    def rebuild(self, items: Iterable[Item]) -> Self:
        """Fit everything on ``items`` (the whole catalog)."""
        with self._lock:
            self._items = {item.item_id: item for item in items}
            self._refit()
            self._keys.clear()
            self._groups.clear()
            self._track(list(self._items.values()))
        return self

    def _refit(self) -> None:
        items = list(self._items.values())
        self.features = self._new_features().fit(items)
        self.content = ContentSimilarity(self.text_backend).fit(items)
        self._fitted_n = len(items)
        self._added = 0

    def upsert(self, items: Sequence[Item]) -> None:
        """Index new or changed items now; refit when the catalog grew enough."""
        if not items:
            return
        with self._lock:
            self._added += sum(item.item_id not in self._items for item in items)
            for item in items:
                self._items[item.item_id] = item
            if self._added >= max(1.0, self.refit_growth * self._fitted_n):
                if self.content.encoder_.learns:
                    self._refit()
                else:  # nothing to learn from the texts: keep the encoded rows
                    self.features = self._new_features().fit(list(self._items.values()))
                    self.content.upsert(items)
                    self._fitted_n, self._added = len(self._items), 0
            else:
                self.content.upsert(items)
            self._track(items)

    def delete(self, item_id: str) -> None:
        with self._lock:
            if self._items.pop(item_id, None) is not None:
                self.content.remove(item_id)
                self._untrack(item_id)

    def _track(self, items: Sequence[Item]) -> None:
        for item in items:
            self._untrack(item.item_id)
            key = duplicate_key(item)
            if key is not None:
                self._keys[item.item_id] = key
                self._groups.setdefault(key, set()).add(item.item_id)

    def _untrack(self, item_id: str) -> None:
        key = self._keys.pop(item_id, None)
        if key is not None:
            group = self._groups[key]
            group.discard(item_id)
            if not group:
                del self._groups[key]

    # -- reads -------------------------------------------------------------------------

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def get(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def neighbors(
        self, item_id: str, k: int, *, exclude: Iterable[str] = ()
    ) -> list[tuple[str, float]]:
        """Content neighbours of a catalog item (empty for an unknown one)."""
        with self._lock:
            if item_id not in self._items:
                return []
            return self.content.neighbors(item_id, k, exclude=exclude)

    def duplicates_of(self, item_id: str) -> list[str]:
        """Every item (this one included, sorted) sharing its normalized title + brand."""
        with self._lock:
            key = self._keys.get(item_id)
            group = self._groups.get(key, set()) if key is not None else set()
            return sorted(group) if len(group) >= 2 else []

    def duplicate_groups(self) -> list[list[str]]:
        """Every live duplicate group, largest first."""
        with self._lock:
            groups = [sorted(g) for g in self._groups.values() if len(g) >= 2]
        return sorted(groups, key=lambda g: (-len(g), g[0]))

    def describe(self, item_id: str) -> dict[str, Any] | None:
        """The cleaned features of one catalog item, or None when it is not in the catalog."""
        with self._lock:
            item = self._items.get(item_id)
            if item is None:
                return None
            row = self.features.transform([item]).row(0, named=True)
            duplicates = self.duplicates_of(item_id)
            terms = self.content.top_terms(item_id, self.top_terms)
        return {
            "item_id": item.item_id,
            "title": item.title,
            "title_norm": row["title_norm"],
            "brand": item.brand,
            "category": item.category,
            "levels": [row[f"level_{i}"] for i in (1, 2, 3)],
            "category_depth": row["category_depth"],
            "price": item.price,
            "original_price": item.original_price,
            "discount_pct": row["discount_pct"],
            "price_z": row["price_z"],
            "price_percentile": row["price_pct"],
            "price_group": row["price_group"],
            "price_group_level": row["price_group_level"],
            "price_group_size": row["price_group_size"],
            "stock": item.stock,
            "stock_flag": row["stock_flag"],
            "missing": {f: bool(row[f"{f}_missing"]) for f in MISSING_FIELDS},
            "duplicate_group": duplicates,
            "top_terms": [{"term": t, "weight": w} for t, w in terms],
            "text_backend": self.text_backend,
        }

    def matrix(self, vocab: Vocabulary) -> FloatArray:
        """``ItemFeatures.matrix`` of the live catalog over ``vocab``."""
        with self._lock:
            return self.features.matrix(list(self._items.values()), vocab)
