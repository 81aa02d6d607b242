"""Content similarity: the nearest items of any item by text, category and brand.

Needs no interaction at all, so it answers for an item added a second ago (cold
start). The score of a candidate ``b`` for a query item ``a``::

    text_weight · cos(text_a, text_b)
  + category_weight · shared_leading_levels(a, b) / max(depth_a, depth_b)
  + brand_weight · [brand_a == brand_b, both known, compared case-insensitively]

``cos`` is the dot product of the encoder's L2-normalized rows (TF-IDF by default, see
``shopcast.features.text``). Candidates scoring 0 are never neighbours.

``upsert`` encodes new or changed items with the encoder as fitted (no refit), so the
index is current at once; ``fit`` re-learns the encoder over the items it is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from shopcast.domain import Item
from shopcast.errors import ConfigError, NotFittedError
from shopcast.features.text import TextEncoder, TextMatrix, item_text, make_text_encoder
from shopcast.models._base import FloatArray, IntArray, Vocabulary
from shopcast.models._common import top_indices

#: Pending rows are merged into the main matrix when there are more than this many
#: (or a twentieth of the rows, when that is more).
MERGE_MIN_ROWS = 256


def _rows(matrix: TextMatrix, order: IntArray) -> TextMatrix:
    if sp.issparse(matrix):
        return sp.csr_array(matrix)[order]
    return np.asarray(matrix)[order]


def _stack(blocks: list[TextMatrix]) -> TextMatrix:
    if sp.issparse(blocks[0]):
        return sp.csr_array(sp.vstack([sp.csr_array(b) for b in blocks], format="csr"))
    return np.vstack(blocks)


def _dot(matrix: TextMatrix, row: TextMatrix) -> FloatArray:
    """``matrix @ row.T`` as a dense 1-d float64 array."""
    if sp.issparse(matrix):
        vector = np.asarray(sp.csr_array(row).toarray(), dtype=np.float64).ravel()
        return np.asarray(sp.csr_array(matrix) @ vector, dtype=np.float64)
    return np.asarray(np.asarray(matrix) @ np.asarray(row).ravel(), dtype=np.float64)


def _empty(matrix: TextMatrix, n: int) -> TextMatrix:
    if sp.issparse(matrix):
        return sp.csr_array((n, matrix.shape[1]), dtype=np.float64)
    return np.zeros((n, matrix.shape[1]), dtype=np.asarray(matrix).dtype)


class ContentSimilarity:
    """Nearest items by text (+ category, + brand); see the module docstring.

    ``encoder`` is a backend name (``tfidf``, ``minilm``) or a ``TextEncoder``.
    Learned state: ``encoder_`` (fitted), ``items_`` (ids -> rows, append-only),
    ``text_`` (encoded rows), category prefix codes and brand codes per row.
    Not thread-safe: callers serialize ``upsert``/``remove`` with queries.
    """

    encoder_: TextEncoder
    items_: Vocabulary
    text_: TextMatrix

    def __init__(
        self,
        encoder: str | TextEncoder = "tfidf",
        *,
        text_weight: float = 0.7,
        category_weight: float = 0.2,
        brand_weight: float = 0.1,
    ) -> None:
        for name, w in (
            ("text_weight", text_weight),
            ("category_weight", category_weight),
            ("brand_weight", brand_weight),
        ):
            if not w >= 0:
                raise ConfigError(f"{name} must be >= 0, got {w}")
        self.encoder = encoder
        self.text_weight = text_weight
        self.category_weight = category_weight
        self.brand_weight = brand_weight

    # -- building ------------------------------------------------------------------------

    def fit(self, items: Iterable[Item]) -> Self:
        """Fit the encoder on the items' texts and index every item."""
        items = list(items)
        encoder = make_text_encoder(self.encoder) if isinstance(self.encoder, str) else self.encoder
        self.encoder_ = encoder.fit([item_text(i) for i in items])
        self.items_ = Vocabulary()
        self._prefix_codes: dict[tuple[str, ...], int] = {}
        self._brand_codes: dict[str, int] = {}
        self._cat = np.full((0, 0), -1, dtype=np.int64)  # rows x levels: prefix codes
        self._depth = np.zeros(0, dtype=np.int64)
        self._brand = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._pending: dict[int, TextMatrix] = {}
        self.text_ = _empty(self.encoder_.transform([""]), 0)
        self.upsert(items)
        self._merge()
        return self

    def _require_fitted(self) -> None:
        if not hasattr(self, "encoder_"):
            raise NotFittedError("ContentSimilarity is not fitted; call fit() first")

    def upsert(self, items: Iterable[Item]) -> None:
        """Index new or changed items with the fitted encoder (the last of an id wins)."""
        self._require_fitted()
        latest = {item.item_id: item for item in items}
        if not latest:
            return
        batch = list(latest.values())
        encoded = self.encoder_.transform([item_text(i) for i in batch])
        encoded = sp.csr_array(encoded) if sp.issparse(encoded) else np.asarray(encoded)
        rows = self.items_.indices([i.item_id for i in batch], add=True)
        self._grow(len(self.items_))
        for row, item in zip(rows.tolist(), batch, strict=True):
            self._set_meta(row, item)
        if len(self._pending) + len(batch) > max(MERGE_MIN_ROWS, self.text_.shape[0] // 20):
            self._merge(rows, encoded)
        else:
            for j, row in enumerate(rows.tolist()):
                self._pending[row] = encoded[[j]]

    def remove(self, item_id: str) -> bool:
        """Stop proposing ``item_id``; False when it is not indexed."""
        self._require_fitted()
        row = self.items_.index(item_id)
        if row < 0 or not self._alive[row]:
            return False
        self._alive[row] = False
        return True

    def __contains__(self, item_id: object) -> bool:
        if not hasattr(self, "items_") or not isinstance(item_id, str):
            return False
        row = self.items_.index(item_id)
        return row >= 0 and bool(self._alive[row])

    def __len__(self) -> int:
        return int(self._alive.sum()) if hasattr(self, "_alive") else 0

    def _grow(self, n: int) -> None:
        extra = n - self._depth.shape[0]
        if extra <= 0:
            return
        self._cat = np.vstack([self._cat, np.full((extra, self._cat.shape[1]), -1, np.int64)])
        self._depth = np.concatenate([self._depth, np.zeros(extra, np.int64)])
        self._brand = np.concatenate([self._brand, np.full(extra, -1, np.int64)])
        self._alive = np.concatenate([self._alive, np.zeros(extra, bool)])

    def _set_meta(self, row: int, item: Item) -> None:
        path = item.category
        if len(path) > self._cat.shape[1]:
            pad = np.full((self._cat.shape[0], len(path) - self._cat.shape[1]), -1, np.int64)
            self._cat = np.hstack([self._cat, pad])
        self._cat[row, :] = -1
        for d in range(1, len(path) + 1):
            key = tuple(level.lower() for level in path[:d])
            self._cat[row, d - 1] = self._prefix_codes.setdefault(key, len(self._prefix_codes))
        self._depth[row] = len(path)
        brand = item.brand.lower() if item.brand else None
        self._brand[row] = (
            -1 if brand is None else self._brand_codes.setdefault(brand, len(self._brand_codes))
        )
        self._alive[row] = True

    def _merge(self, rows: IntArray | None = None, block: TextMatrix = None) -> None:
        """Fold pending rows, then ``block`` (encoded ``rows``), into ``text_``."""
        n = len(self.items_)
        base = self.text_
        if base.shape[0] < n:
            base = _stack([base, _empty(base, n - base.shape[0])])
        blocks = [base]
        order = np.arange(n, dtype=np.int64)
        offset = n
        if self._pending:
            pending = sorted(self._pending)
            blocks.extend(self._pending[r] for r in pending)
            order[pending] = offset + np.arange(len(pending))
            offset += len(pending)
        if rows is not None and rows.shape[0]:
            blocks.append(block)
            order[rows] = offset + np.arange(rows.shape[0])
        if len(blocks) > 1:
            base = _rows(_stack(blocks), order)
        self.text_ = base
        self._pending = {}

    # -- queries -------------------------------------------------------------------------

    def scores(self, item_id: str) -> FloatArray:
        """The score of every indexed row for ``item_id`` (itself and removed rows: 0)."""
        self._require_fitted()
        row = self.items_.index(item_id)
        if row < 0:
            return np.zeros(len(self.items_), dtype=np.float64)
        out = self._scores(
            self._text_row(row), self._cat[row, : self._depth[row]], int(self._brand[row])
        )
        out[row] = 0.0
        return out

    def scores_for(self, item: Item) -> FloatArray:
        """Scores of every indexed row for an item that need not be indexed."""
        self._require_fitted()
        text = self.encoder_.transform([item_text(item)])
        codes = []
        for d in range(1, len(item.category) + 1):
            code = self._prefix_codes.get(tuple(level.lower() for level in item.category[:d]))
            codes.append(-2 if code is None else code)  # -2 never matches a stored code
        brand = self._brand_codes.get(item.brand.lower(), -2) if item.brand else -1
        out = self._scores(text, np.array(codes, np.int64), brand)
        row = self.items_.index(item.item_id)
        if row >= 0:
            out[row] = 0.0
        return out

    def neighbors(
        self, item: str | Item, k: int, *, exclude: Iterable[str] = ()
    ) -> list[tuple[str, float]]:
        """Up to ``k`` ``(item_id, score)`` best first, scores > 0 (ties: older rows first)."""
        scores = self.scores(item) if isinstance(item, str) else self.scores_for(item)
        for item_id in exclude:
            row = self.items_.index(item_id)
            if row >= 0:
                scores[row] = 0.0
        positive = np.flatnonzero(scores > 0)
        best = positive[top_indices(scores[positive], k)]
        return [(self.items_.id(int(i)), float(scores[i])) for i in best]

    def _text_row(self, row: int) -> TextMatrix:
        pending = self._pending.get(row)
        if pending is not None:
            return pending
        if row < self.text_.shape[0]:
            return self.text_[[row]]
        return _empty(self.text_, 1)

    def _scores(self, text: TextMatrix, codes: IntArray, brand: int) -> FloatArray:
        n = len(self.items_)
        out = np.zeros(n, dtype=np.float64)
        if self.text_weight > 0:
            cos = np.zeros(n, dtype=np.float64)
            cos[: self.text_.shape[0]] = _dot(self.text_, text)
            if self._pending:
                rows = sorted(self._pending)
                cos[rows] = _dot(_stack([self._pending[r] for r in rows]), text)
            out += self.text_weight * cos
        depth = codes.shape[0]
        if self.category_weight > 0 and depth:
            levels = min(depth, self._cat.shape[1])
            shared = (self._cat[:, :levels] == codes[:levels]).sum(axis=1)
            denom = np.maximum(self._depth, depth).astype(np.float64)
            out += self.category_weight * shared / denom
        if self.brand_weight > 0 and brand >= 0:
            out += self.brand_weight * (self._brand == brand)
        out[~self._alive] = 0.0
        return out

    def top_terms(self, item_id: str, n: int = 5) -> list[tuple[str, float]]:
        """The heaviest TF-IDF terms of an indexed item (empty for other encoders)."""
        self._require_fitted()
        row = self.items_.index(item_id)
        top: Any = getattr(self.encoder_, "top_terms", None)
        if row < 0 or top is None:
            return []
        terms: list[tuple[str, float]] = top(self._text_row(row), n)
        return terms
