"""Neighbourhood model on baseline residuals (Koren, KDD 2008; Surprise's ``KNNBaseline``).

Baselines ``b_ui = μ + b_u + b_i`` are fitted by ``n_epochs`` rounds of alternating
regularized least squares (``reg_items`` for the item biases, then ``reg_users`` for the
user biases). The similarity of two users (``user_based``) or two items is the Pearson
correlation of their baseline residuals ``r - b`` over the items (users) both rated,
shrunk by ``(n - 1) / (n - 1 + shrinkage)`` with ``n`` that count. A prediction is

    r̂_ui = b_ui + Σ_v s_uv (r_vi - b_vi) / Σ_v s_uv

over the ``k`` most similar users ``v`` who rated ``i`` (items ``j`` that ``u`` rated when
item-based), positive similarities only; with fewer than ``min_k`` of those, ``b_ui``.

Every (user, item) prediction is computed once after ``fit`` (dense: the model is meant
for rating matrices of MovieLens size, ``MAX_CELLS``); ``load`` recomputes them from the
saved ratings. Unknown users or items get the baseline parts that are known.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from shopcast.errors import ConfigError, ModelError
from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import check_positive, gather, load_model, require_fitted, save_model
from shopcast.models._data import (
    SubjectIndex,
    als_baselines,
    explicit_ratings,
    n_items_of,
    n_users_of,
)
from shopcast.models.blend import Blend

log = logging.getLogger(__name__)

#: Largest users × items (and neighbours × neighbours) matrix the model accepts.
MAX_CELLS = 50_000_000

#: Components of ``blend_knn``: GLocal-K, Bayesian MF, user- and item-based kNN baseline.
BLEND_COMPONENTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("glocal_k", {}),
    ("mf_bayes", {}),
    ("knn_baseline", {"user_based": True}),
    ("knn_baseline", {"user_based": False}),
)


class KNNBaseline:
    """k nearest neighbours on baseline residuals, Pearson-baseline similarity.

    Defaults are Surprise's ``KNNBaseline`` with ``pearson_baseline`` similarity and ALS
    baselines (k 40, min_k 1, shrinkage 100, reg 15 / 10, 10 epochs).

    Learned state: ``mu_``, ``user_bias_``, ``item_bias_``, ``pred_`` (users × items),
    ``r_min_``, ``r_max_``, ``subjects_``.
    """

    name: ClassVar[str] = "knn_baseline"
    named_only: ClassVar[bool] = True

    _params = ("k", "min_k", "shrinkage", "user_based", "reg_users", "reg_items", "n_epochs")

    def __init__(
        self,
        k: int = 40,
        min_k: int = 1,
        shrinkage: float = 100.0,
        user_based: bool = True,
        reg_users: float = 15.0,
        reg_items: float = 10.0,
        n_epochs: int = 10,
    ) -> None:
        if not k >= 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if not 1 <= min_k <= k:
            raise ConfigError(f"min_k must be in [1, k], got {min_k}")
        if not shrinkage >= 0:
            raise ConfigError(f"shrinkage must be >= 0, got {shrinkage}")
        if not n_epochs >= 1:
            raise ConfigError(f"n_epochs must be >= 1, got {n_epochs}")
        self.k = int(k)
        self.min_k = int(min_k)
        self.shrinkage = float(shrinkage)
        self.user_based = bool(user_based)
        self.reg_users = check_positive("reg_users", float(reg_users))
        self.reg_items = check_positive("reg_items", float(reg_items))
        self.n_epochs = int(n_epochs)

    def fit(self, data: Interactions) -> Self:
        user, item, r = explicit_ratings(data)
        self.subjects_ = SubjectIndex(data.users.ids[: n_users_of(data)])
        self._fit_ratings(user, item, r, n_users_of(data), n_items_of(data))
        return self

    def _fit_ratings(
        self, user: IntArray, item: IntArray, r: FloatArray, n_users: int, n_items: int
    ) -> None:
        n_near = n_users if self.user_based else n_items
        if n_users * n_items > MAX_CELLS or n_near * n_near > MAX_CELLS:
            raise ModelError(
                f"knn_baseline holds dense {n_users:,} x {n_items:,} matrices; "
                f"more than {MAX_CELLS:,} cells"
            )
        self._ratings = (user.astype(np.int64), item.astype(np.int64), r.astype(np.float64))
        mu, bu, bi = als_baselines(
            user,
            item,
            r,
            n_users,
            n_items,
            reg_users=self.reg_users,
            reg_items=self.reg_items,
            n_epochs=self.n_epochs,
        )
        resid = np.zeros((n_users, n_items))
        mask = np.zeros((n_users, n_items))
        resid[user, item] = r - mu - bu[user] - bi[item]
        mask[user, item] = 1.0
        if not self.user_based:
            resid, mask = resid.T, mask.T
        near = _neighbours(resid, mask, _pearson(resid, mask, self.shrinkage), self.k, self.min_k)
        base = mu + bu[:, None] + bi[None, :]
        self.pred_ = base + (near if self.user_based else near.T)
        self.mu_, self.user_bias_, self.item_bias_ = mu, bu, bi
        self.r_min_, self.r_max_ = float(r.min()), float(r.max())

    def predict(self, user: IntArray, item: IntArray) -> FloatArray:
        """Clipped predictions; unknown users or items get the known baseline parts."""
        require_fitted(self, "pred_")
        u = np.asarray(user, dtype=np.int64)
        i = np.asarray(item, dtype=np.int64)
        n_users, n_items = self.pred_.shape
        ku = (u >= 0) & (u < n_users)
        ki = (i >= 0) & (i < n_items)
        uu, ii = np.where(ku, u, 0), np.where(ki, i, 0)
        partial = self.mu_ + np.where(ku, self.user_bias_[uu], 0.0)
        partial = partial + np.where(ki, self.item_bias_[ii], 0.0)
        out = np.where(ku & ki, self.pred_[uu, ii], partial)
        return np.asarray(np.clip(out, self.r_min_, self.r_max_), dtype=np.float64)

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return gather(self.score_all([context])[0], candidates)

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        """Predicted (unclipped) rating of every fitted item for each context's subject."""
        require_fitted(self, "pred_")
        out = np.empty((len(contexts), self.pred_.shape[1]), dtype=np.float64)
        for row, c in enumerate(contexts):
            u = self.subjects_.of(c)
            ok = 0 <= u < self.pred_.shape[0]
            out[row] = self.pred_[u] if ok else self.mu_ + self.item_bias_
        return out

    def save(self, path: Path) -> None:
        require_fitted(self, "pred_")
        user, item, r = self._ratings
        save_model(
            path,
            self,
            params={n: getattr(self, n) for n in self._params},
            state={"n_users": self.pred_.shape[0], "n_items": self.pred_.shape[1]},
            arrays={"r_user": user, "r_item": item, "r_value": r, "subjects": self.subjects_.keys},
        )

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        names = ("r_user", "r_item", "r_value", "subjects")
        model, state, arrays = load_model(path, cls, items, names)
        model.subjects_ = SubjectIndex(arrays["subjects"].tolist())
        model._fit_ratings(
            arrays["r_user"],
            arrays["r_item"],
            arrays["r_value"],
            int(state["n_users"]),
            int(state["n_items"]),
        )
        return model


def _pearson(resid: FloatArray, mask: FloatArray, shrinkage: float) -> FloatArray:
    """Shrunk Pearson correlation of the rows' residuals over their common columns;
    the diagonal is -1 so that a row is never its own neighbour."""
    prods = resid @ resid.T
    sq = (resid * resid) @ mask.T  # [x, y]: Σ over columns both rated of resid[x]²
    common = mask @ mask.T
    denom = np.sqrt(sq * sq.T)
    sim = np.divide(prods, denom, out=np.zeros_like(prods), where=denom > 0)
    sim *= np.maximum(common - 1, 0) / np.maximum(common - 1 + shrinkage, 1e-12)
    np.fill_diagonal(sim, -1.0)
    return sim


def _neighbours(
    resid: FloatArray, mask: FloatArray, sim: FloatArray, k: int, min_k: int
) -> FloatArray:
    """``out[x, c]``: the similarity-weighted mean residual in column ``c`` of the ``k``
    rows most similar to ``x`` that have an entry there (positive similarities only);
    0 where fewer than ``min_k`` such rows exist."""
    n_rows, n_cols = resid.shape
    out = np.zeros((n_rows, n_cols))
    for c in range(n_cols):
        rows = np.flatnonzero(mask[:, c])
        if rows.size == 0:
            continue
        s = sim[:, rows]
        if rows.size > k:
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s = np.take_along_axis(s, top, axis=1)
            e = resid[rows[top], c]
        else:
            e = np.broadcast_to(resid[rows, c], s.shape)
        w = np.maximum(s, 0.0)
        total = w.sum(axis=1)
        enough = (w > 0).sum(axis=1) >= min_k
        ok = enough & (total > 0)
        out[ok, c] = (w[ok] * e[ok]).sum(axis=1) / total[ok]
    return out


class KNNBlend(Blend):
    """``Blend`` of GLocal-K, Bayesian MF and the user- and item-based kNN baseline
    (an autoencoder, a factor model and two neighbourhood models err apart).

    Same fitting as ``Blend``: weights by ridge on a seeded holdout of the training
    ratings, then every component refitted on all of them.
    """

    name: ClassVar[str] = "blend_knn"
    named_only: ClassVar[bool] = True

    def __init__(
        self,
        components: Sequence[Sequence[Any]] = BLEND_COMPONENTS,
        holdout: float = 0.1,
        reg: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(components=components, holdout=holdout, reg=reg, seed=seed)
