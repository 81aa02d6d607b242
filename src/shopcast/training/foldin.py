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

from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from shopcast.domain import Item
from shopcast.features.text import TfidfText
from shopcast.models._base import FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import weight_array
from shopcast.models._data import SubjectIndex, user_item_matrix
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
    """Implicit ALS with closed-form online updates (see the module docstring)."""

    name: ClassVar[str] = "ials_online"

    def __init__(self, *args: Any, item_min_events: int = 5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.item_min_events = item_min_events

    # -- online -----------------------------------------------------------------------

    def learn(self, data: Interactions) -> None:
        """Fold in the subjects and items of ``data`` (vocabularies may have grown)."""
        if not len(data):
            return
        keys = [data.users.id(int(u)) for u in data.user.tolist()]
        rows = self._rows_for(keys)
        self._grow_items(len(data.items))
        w = weight_array(self.event_weights)[data.type]
        keep = w > 0
        delta = sp.csr_array((w[keep], (rows[keep], data.item[keep])), shape=self.history_.shape)
        self.history_ = (self.history_ + delta).tocsr()
        items = np.unique(data.item[keep])
        counts = np.diff(self.history_.tocsc().indptr)[items]
        self._solve_items(items[counts >= self.item_min_events])  # items first: users
        self._solve_users(np.unique(rows[keep]))  # then get the exact solve for the new Y

    def _rows_for(self, keys: list[str]) -> IntArray:
        index = dict(zip(self.subjects_.keys.tolist(), range(len(self.subjects_)), strict=True))
        new = [k for k in dict.fromkeys(keys) if k not in index]
        if new:
            for k in new:
                index[k] = len(index)
            self.subjects_ = SubjectIndex([*self.subjects_.keys.tolist(), *new])
            self.P_ = np.vstack([self.P_, np.zeros((len(new), self.n_factors))])
            self.history_ = sp.csr_array(
                sp.vstack([self.history_, sp.csr_array((len(new), self.history_.shape[1]))])
            )
        return np.array([index[k] for k in keys], dtype=np.int64)

    def _grow_items(self, n_items: int) -> None:
        extra = n_items - self.Q_.shape[0]
        if extra > 0:
            self.Q_ = np.vstack([self.Q_, np.zeros((extra, self.n_factors))])
            self.history_ = sp.csr_array(
                sp.hstack([self.history_, sp.csr_array((self.history_.shape[0], extra))])
            )

    def _solve_users(self, users: IntArray) -> None:
        if users.size:
            sub = self.history_[users].tocoo()
            conf = 1.0 + self.alpha * sub.data
            self.P_[users] = self._solve(
                sub.row.astype(np.int64), users.size, self.Q_, sub.col.astype(np.int64), conf
            )

    def _solve_items(self, items: IntArray) -> None:
        if items.size:
            sub = self.history_.tocsc()[:, items].tocoo()
            conf = 1.0 + self.alpha * sub.data
            self.Q_[items] = self._solve(
                sub.col.astype(np.int64), items.size, self.P_, sub.row.astype(np.int64), conf
            )

    # -- content ------------------------------------------------------------------------

    def fit_content(
        self, items: Sequence[Item], vocab: Vocabulary, **kwargs: Any
    ) -> ContentEmbedder:
        """The content map fitted on the catalog items that have interactions."""
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
        if not hasattr(self, "content_"):
            return 0
        rows = vocab.indices([i.item_id for i in items], add=True)
        self._grow_items(len(vocab))
        counts = np.diff(self.history_.tocsc().indptr)
        fresh = [(r, i) for r, i in zip(rows.tolist(), items, strict=True) if counts[r] == 0]
        if fresh:
            idx = np.array([r for r, _ in fresh], dtype=np.int64)
            self.Q_[idx] = self.content_.embed([i for _, i in fresh])
        return len(fresh)

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
        return self
