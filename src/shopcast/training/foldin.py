"""Incremental matrix factorization: closed-form fold-in and content embeddings.

``OnlineALS`` is implicit ALS (``models.ials.ImplicitALS``) that keeps learning
between retrains, each step an exact ridge solve with the other side fixed:

- **fold-in of users** (``learn``): a shopper's new events join its row of the
  interaction history ``W`` and its factors are re-solved in closed form,
  ``x_u = (YᵀY + Yᵀ(C_u − I)Y + λI)⁻¹ YᵀC_u p_u`` — a new shopper gets a row and
  factors at once;
- **fold-in of items**: an item with at least ``item_min_events`` interactions gets its
  factors re-solved the same way from the users' factors;
- **new items before any interaction** (``add_items``): factors from content,
  ``y_i = W_c · x_i`` where ``x_i`` are the item's content features (TF-IDF of title,
  description, category path and brand) and ``W_c`` is a ridge regression fitted from
  the content features of the items that have factors to those factors
  (``ContentEmbedder``) — so a brand-new item already scores for shoppers whose
  factors point at items like it;
- **warm start** (``warm_start``): a full refit that starts from the previous factors
  (new rows: fold-in / content), so a few iterations reach the quality of a cold fit.

State is saved as ``ImplicitALS`` saves it (``.npz`` + JSON, no pickle); the content
map is refitted when needed, not persisted.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from shopcast.domain import Item
from shopcast.features.text import TfidfText
from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import weight_array
from shopcast.models._data import SubjectIndex, ridge_by_group, user_item_matrix
from shopcast.models.ials import ImplicitALS


def content_text(item: Item) -> str:
    """Title, description, category path (each level and each prefix) and brand."""
    path = [c.replace(" ", "_") for c in item.category]
    prefixes = ["cat_" + "__".join(path[: k + 1]) for k in range(len(path))]
    brand = f"brand_{item.brand.replace(' ', '_')}" if item.brand else ""
    return " ".join(t for t in (item.title, item.description, *prefixes, brand) if t)


class ContentEmbedder:
    """Ridge regression from item content features to item factors."""

    def __init__(self, reg: float = 1.0, max_features: int = 2000) -> None:
        self.reg = reg
        self.max_features = max_features

    def fit(self, items: Sequence[Item], factors: FloatArray) -> Self:
        """``items[j]`` has the factors ``factors[j]``."""
        self.text_ = TfidfText(max_features=self.max_features, stop_words=()).fit(
            [content_text(i) for i in items]
        )
        x = self._features(items)
        gram = (x.T @ x).toarray() if sp.issparse(x) else x.T @ x
        gram[np.diag_indices_from(gram)] += self.reg
        rhs = x.T @ factors
        self.W_ = np.linalg.solve(gram, np.asarray(rhs))
        return self

    def _features(self, items: Sequence[Item]) -> Any:
        text = self.text_.transform([content_text(i) for i in items])
        bias = sp.csr_array(np.ones((len(items), 1)))
        return sp.hstack([text, bias], format="csr")

    def embed(self, items: Sequence[Item]) -> FloatArray:
        if not items:
            return np.zeros((0, self.W_.shape[1]))
        return np.asarray(self._features(items) @ self.W_, dtype=np.float64)


class OnlineALS(ImplicitALS):
    """Implicit ALS with closed-form online updates (see the module docstring).

    New events wait in a small buffer beside the fitted history (a CSR matrix and its
    CSC copy), so an update costs what the touched rows and columns hold, not a copy of
    the whole history; the buffer is merged every ``merge_every`` pairs and on save.
    ``catalog`` (items with their metadata) fits the content map after ``fit``; it is
    saved with the model (TF-IDF terms + ridge weights, ``.npz``/JSON, no pickle).
    """

    name: ClassVar[str] = "ials_online"

    def __init__(
        self,
        *args: Any,
        item_min_events: int = 5,
        merge_every: int = 20_000,
        catalog: Sequence[Item] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.item_min_events = item_min_events
        self.merge_every = merge_every
        self.catalog = catalog
        self._reset_pending()
        self._lock = threading.RLock()
        self._catalog_revision = -1

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        """A copy with its own lock (a lock cannot be copied)."""
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            fresh = threading.RLock() if key == "_lock" else copy.deepcopy(value, memo)
            setattr(clone, key, fresh)
        return clone

    def fit(self, data: Interactions) -> Self:
        with self._lock:
            super().fit(data)
            self._reset_pending()
            self._csc = self.history_.tocsc()
            if self.catalog:
                self.fit_content(self.catalog, data.items)
            return self

    # -- online -----------------------------------------------------------------------

    def learn(self, data: Interactions) -> None:
        """Fold in the subjects and items of ``data`` (vocabularies may have grown)."""
        if not len(data):
            return
        with self._lock:
            keys = [data.users.id(int(u)) for u in data.user.tolist()]
            rows = self._rows_for(keys)
            self._grow_items(len(data.items))
            w = weight_array(self.event_weights)[data.type]
            keep = w > 0
            for r, i, v in zip(
                rows[keep].tolist(), data.item[keep].tolist(), w[keep].tolist(), strict=True
            ):
                if (r, i) not in self._pending:
                    self._pending_per_item[i] = self._pending_per_item.get(i, 0) + 1
                    self._by_row.setdefault(r, []).append(i)
                    self._by_col.setdefault(i, []).append(r)
                self._pending[(r, i)] = self._pending.get((r, i), 0.0) + v
            items = np.unique(data.item[keep])
            fitted = self._fitted_counts(items)
            buffered = np.array([self._pending_per_item.get(i, 0) for i in items.tolist()])
            counts = fitted + buffered if items.size else fitted
            self._solve_items(items[counts >= self.item_min_events])  # items first: users
            self._solve_users(np.unique(rows[keep]))  # then get the exact solve for the new Y
            if len(self._pending) >= self.merge_every:
                self.merge()

    def merge(self) -> None:
        """Move the buffered events into the fitted history."""
        with self._lock:
            if not self._pending:
                return
            (r, c), v = zip(*self._pending.keys(), strict=True), list(self._pending.values())
            shape = (self.P_.shape[0], self.Q_.shape[0])
            delta = sp.csr_array((np.asarray(v), (np.asarray(r), np.asarray(c))), shape=shape)
            self.history_ = sp.csr_array(self._padded(shape) + delta)
            self._csc = self.history_.tocsc()
            self._reset_pending()

    def _rows_for(self, keys: list[str]) -> IntArray:
        """Rows of the subjects; new ones get a row of factors (their history stays in
        the buffer until the next merge)."""
        index = self.subjects_._index
        new = [k for k in dict.fromkeys(keys) if k not in index]
        if new:
            self.subjects_ = SubjectIndex([*self.subjects_.keys.tolist(), *new])
            self.P_ = np.vstack([self.P_, np.zeros((len(new), self.n_factors))])
            index = self.subjects_._index
        return np.array([index[k] for k in keys], dtype=np.int64)

    def _grow_items(self, n_items: int) -> None:
        extra = n_items - self.Q_.shape[0]
        if extra > 0:
            self.Q_ = np.vstack([self.Q_, np.zeros((extra, self.n_factors))])

    def _padded(self, shape: tuple[int, int]) -> Any:
        """The fitted history grown to ``shape`` (new subjects and items: empty)."""
        h = self.history_
        if h.shape == shape:
            return h
        h = sp.csr_array(sp.vstack([h, sp.csr_array((shape[0] - h.shape[0], h.shape[1]))]))
        return sp.csr_array(sp.hstack([h, sp.csr_array((shape[0], shape[1] - h.shape[1]))]))

    def _fitted_counts(self, items: IntArray) -> IntArray:
        """Fitted interactions per item (0 for items newer than the fitted history)."""
        counts = np.diff(self._csc.indptr)
        inside = items < counts.shape[0]
        out = np.zeros(items.shape[0], dtype=np.int64)
        out[inside] = counts[items[inside]]
        return out

    def _entries(self, axis: int, keys: IntArray) -> tuple[IntArray, IntArray, FloatArray]:
        """``(group, other, weight)`` of the rows (axis 0) or columns (axis 1) ``keys``:
        fitted history plus buffered events, summed per pair."""
        pos = {int(k): g for g, k in enumerate(keys.tolist())}
        inside = np.flatnonzero(keys < self.history_.shape[axis])
        if axis == 0:
            sub = self.history_[keys[inside]].tocoo()
            group, other = inside[sub.row].astype(np.int64), sub.col.astype(np.int64)
        else:
            sub = self._csc[:, keys[inside]].tocoo()
            group, other = inside[sub.col].astype(np.int64), sub.row.astype(np.int64)
        index = self._by_row if axis == 0 else self._by_col
        extra = []
        for key, slot in pos.items():
            for peer in index.get(key, ()):
                pair = (key, peer) if axis == 0 else (peer, key)
                extra.append((slot, peer, self._pending[pair]))
        if extra:
            g, o, v = (np.asarray(x) for x in zip(*extra, strict=True))
            m = (
                sp.coo_array(
                    (
                        np.concatenate([sub.data, v.astype(np.float64)]),
                        (
                            np.concatenate([group, g.astype(np.int64)]),
                            np.concatenate([other, o.astype(np.int64)]),
                        ),
                    ),
                    shape=(len(keys), (self.Q_ if axis == 0 else self.P_).shape[0]),
                )
                .tocsr()
                .tocoo()
            )
            return m.row.astype(np.int64), m.col.astype(np.int64), m.data
        return group, other, sub.data

    def _reset_pending(self) -> None:
        self._grams: dict[str, tuple[int, FloatArray]] = {}  # factors may have changed
        self._pending: dict[tuple[int, int], float] = {}
        self._pending_per_item: dict[int, int] = {}
        self._by_row: dict[int, list[int]] = {}
        self._by_col: dict[int, list[int]] = {}

    def _gram(self, side: str) -> FloatArray:
        """``XᵀX`` of ``P_`` or ``Q_``, kept up to date row by row (``_set_rows``)."""
        cache = self._grams
        matrix = self.P_ if side == "P" else self.Q_
        found = cache.get(side)
        if found is None or found[0] != matrix.shape[0]:
            found = cache[side] = (matrix.shape[0], matrix.T @ matrix)
        return found[1]

    def _set_rows(self, side: str, rows: IntArray, values: FloatArray) -> None:
        """``P_[rows] = values`` (or ``Q_``) with the Gram matrix updated in place."""
        matrix = self.P_ if side == "P" else self.Q_
        gram = self._gram(side)
        old = matrix[rows]
        gram += values.T @ values - old.T @ old
        matrix[rows] = values

    def _solve_users(self, users: IntArray) -> None:
        if users.size:
            group, item, w = self._entries(0, users)
            conf = 1.0 + self.alpha * w
            solved = ridge_by_group(
                group, users.size, self.Q_[item], conf - 1.0, conf,
                np.full(self.n_factors, self.reg), gram0=self._gram("Q"),
            )  # fmt: skip
            self._set_rows("P", users, solved)

    def _solve_items(self, items: IntArray) -> None:
        if items.size:
            group, user, w = self._entries(1, items)
            conf = 1.0 + self.alpha * w
            solved = ridge_by_group(
                group, items.size, self.P_[user], conf - 1.0, conf,
                np.full(self.n_factors, self.reg), gram0=self._gram("P"),
            )  # fmt: skip
            self._set_rows("Q", items, solved)

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        with self._lock:
            return super().score_all(contexts)

    # -- content ------------------------------------------------------------------------

    def fit_content(
        self, items: Sequence[Item], vocab: Vocabulary, **kwargs: Any
    ) -> ContentEmbedder:
        """The content map fitted on the catalog items that have interactions."""
        with self._lock:
            counts = np.diff(self.history_.tocsc().indptr)
            rows = vocab.indices([i.item_id for i in items])
            ok = (rows >= 0) & (rows < counts.shape[0])
            ok[ok] &= counts[rows[ok]] > 0
            known = [i for i, k in zip(items, ok.tolist(), strict=True) if k]
            self.content_ = ContentEmbedder(**kwargs).fit(known, self.Q_[rows[ok]])
            return self.content_

    def add_items(self, items: Sequence[Item], vocab: Vocabulary) -> int:
        """Content factors for catalog items without interactions (new items); returns
        how many. ``vocab`` grows to hold them."""
        if not hasattr(self, "content_") or not items:
            return 0
        with self._lock:
            rows = vocab.indices([i.item_id for i in items], add=True)
            self._grow_items(len(vocab))
            counts = self._fitted_counts(rows)
            fresh = [
                (r, i)
                for r, i, n in zip(rows.tolist(), items, counts.tolist(), strict=True)
                if n == 0 and r not in self._pending_per_item
            ]
            if fresh:
                idx = np.array([r for r, _ in fresh], dtype=np.int64)
                self._set_rows("Q", idx, self.content_.embed([i for _, i in fresh]))
            return len(fresh)

    def sync_catalog(self, catalog: Any, vocab: Vocabulary) -> int:
        """Content factors for the items a serving catalog (``CatalogIndex``) gained
        since the last call; cheap when nothing changed (its ``revision``)."""
        revision = int(getattr(catalog, "revision", 0))
        if revision == self._catalog_revision or not hasattr(self, "content_"):
            return 0
        with self._lock:
            start = self.Q_.shape[0]
            counts = self._fitted_counts(np.arange(len(vocab), dtype=np.int64))
            new = [
                item
                for idx in range(len(vocab))
                if (idx >= start or (counts[idx] == 0 and not self.Q_[idx].any()))
                and (item := catalog.get(idx)) is not None
            ]
            self._catalog_revision = revision
            return self.add_items(new, vocab)

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: Path) -> None:
        self.merge()
        super().save(path)
        if hasattr(self, "content_"):
            content = self.content_
            content.text_.save(path / "content_text")
            np.savez(path / "content.npz", allow_pickle=False, W=content.W_)

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        model = super().load(path, items)
        model._csc = model.history_.tocsc()
        if (path / "content.npz").is_file():
            content = ContentEmbedder()
            content.text_ = TfidfText.load(path / "content_text")
            with np.load(path / "content.npz", allow_pickle=False) as arrays:
                content.W_ = arrays["W"]
            model.content_ = content
        return model

    # -- warm start ----------------------------------------------------------------------

    def warm_start(self, previous: ImplicitALS, data: Interactions, iterations: int) -> Self:
        """Fit on ``data`` starting from ``previous``'s factors (same item vocabulary,
        possibly grown); users are matched by subject key."""
        n_items = max(len(data.items), previous.Q_.shape[0])
        w = user_item_matrix(data, self.event_weights, binary=False, n_items=n_items)
        self.history_ = w
        self.subjects_ = SubjectIndex(data.users.ids[: w.shape[0]])
        self.Q_ = np.zeros((n_items, self.n_factors))
        self.Q_[: previous.Q_.shape[0]] = previous.Q_
        coo = w.tocoo()
        user, item = coo.row.astype(np.int64), coo.col.astype(np.int64)
        conf = 1.0 + self.alpha * coo.data
        for _ in range(iterations):
            self.P_ = self._solve(user, w.shape[0], self.Q_, item, conf)
            self.Q_ = self._solve(item, n_items, self.P_, user, conf)
        self._csc = self.history_.tocsc()
        self._reset_pending()
        return self
