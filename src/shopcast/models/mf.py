"""Explicit-rating factor models: biased MF (SGD or ALS) and SVD++.

``r̂_ui = μ + b_u + b_i + q_i·p_u`` (SVD++: ``p_u + |N(u)|^-½ Σ_{j∈N(u)} y_j``), fitted on
the ``rate`` events with a value (the latest rating of a pair wins) with L2 penalties
``reg_bias`` on the biases and ``reg_factors`` on the factors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from shopcast.errors import ConfigError
from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import (
    check_positive,
    gather,
    load_model,
    require_fitted,
    resolve_event_weights,
    save_model,
)
from shopcast.models._data import (
    HISTORY_ARRAYS,
    SubjectIndex,
    context_matrix,
    explicit_ratings,
    history_arrays,
    load_history,
    n_items_of,
    n_users_of,
    ridge_by_group,
    user_item_matrix,
)

log = logging.getLogger(__name__)

#: ``progress(epoch, epochs, train_rmse)``, called after each epoch.
Progress = Callable[[int, int, float], None]

SOLVERS = ("sgd", "als")


class RatingFactors:
    """State, prediction, ranking and persistence shared by the explicit-rating factor models.

    ``r̂ = μ + b_u + b_i + q_i·v_u`` with ``v_u`` the effective user factors. ``predict``
    clips to the range of the training ratings; ``score`` ranks by the unclipped ``r̂`` of
    the context's subject (``μ + b_i`` for an unknown one). Unknown indices add nothing.

    Learned state: ``mu_``, ``bu_``, ``bi_``, ``P_``, ``Q_``, ``r_min_``, ``r_max_``,
    ``subjects_``.
    """

    name: ClassVar[str]
    _params: ClassVar[tuple[str, ...]]

    mu_: float
    bu_: FloatArray
    bi_: FloatArray
    P_: FloatArray
    Q_: FloatArray
    r_min_: float
    r_max_: float
    subjects_: SubjectIndex

    def fit(self, data: Interactions) -> Self:
        raise NotImplementedError

    # -- prediction --------------------------------------------------------------------

    def predict(self, user: IntArray, item: IntArray) -> FloatArray:
        """Clipped ``r̂`` per (user, item) index pair; unknown indices add nothing."""
        require_fitted(self, "Q_")
        return np.clip(self._raw(user, item), self.r_min_, self.r_max_)

    def _raw(self, user: IntArray, item: IntArray) -> FloatArray:
        u = np.asarray(user, dtype=np.int64)
        i = np.asarray(item, dtype=np.int64)
        ku = (u >= 0) & (u < self.bu_.shape[0])
        ki = (i >= 0) & (i < self.bi_.shape[0])
        uu, ii = np.where(ku, u, 0), np.where(ki, i, 0)
        pu = self._user_vectors(uu) * ku[:, None]
        qi = self.Q_[ii] * ki[:, None]
        return np.asarray(
            self.mu_ + self.bu_[uu] * ku + self.bi_[ii] * ki + np.einsum("ij,ij->i", pu, qi),
            dtype=np.float64,
        )

    def _user_vectors(self, users: IntArray) -> FloatArray:
        """The effective user factors of fitted users."""
        return self.P_[users]

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return gather(self.score_all([context])[0], candidates)

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        """``r̂`` of every fitted item for each context's subject."""
        require_fitted(self, "Q_")
        users = np.array([self.subjects_.of(c) for c in contexts], dtype=np.int64)
        known = users >= 0
        vectors = self._context_vectors(contexts, users)
        bu = np.where(known, self.bu_[np.where(known, users, 0)], 0.0)
        return np.asarray(self.mu_ + bu[:, None] + self.bi_ + vectors @ self.Q_.T, np.float64)

    def _context_vectors(self, contexts: Sequence[Context], users: IntArray) -> FloatArray:
        known = users >= 0
        return self._user_vectors(np.where(known, users, 0)) * known[:, None]

    # -- persistence -------------------------------------------------------------------

    def save(self, path: Path) -> None:
        require_fitted(self, "Q_")
        save_model(
            path,
            self,
            params={n: getattr(self, n) for n in self._params},
            state={
                "n_items": int(self.Q_.shape[0]),
                "mu": self.mu_,
                "r_min": self.r_min_,
                "r_max": self.r_max_,
            },
            arrays=self._arrays(),
        )

    def _arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        return {
            "bu": self.bu_,
            "bi": self.bi_,
            "P": self.P_,
            "Q": self.Q_,
            "subjects": self.subjects_.keys,
        }

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        model, state, arrays = load_model(path, cls, items, cls._array_names())
        model.mu_ = float(state["mu"])
        model.r_min_, model.r_max_ = float(state["r_min"]), float(state["r_max"])
        model.bu_, model.bi_ = arrays["bu"], arrays["bi"]
        model.P_, model.Q_ = arrays["P"], arrays["Q"]
        model.subjects_ = SubjectIndex(arrays["subjects"].tolist())
        model._restore(arrays, int(state["n_items"]))
        return model

    @classmethod
    def _array_names(cls) -> tuple[str, ...]:
        return ("bu", "bi", "P", "Q", "subjects")

    def _restore(self, arrays: Mapping[str, np.ndarray[Any, Any]], n_items: int) -> None:
        """Hook for state beyond the biases and factors."""


class BiasedMF(RatingFactors):
    """Biased matrix factorization for explicit ratings, by SGD or ALS.

    SGD visits the ratings in a seeded random order in mini-batches of ``batch_size``
    (updates of one batch are summed; ``batch_size=1`` is classic SGD), with step
    ``lr · lr_decay^epoch``. ALS alternates exact ridge solves of ``(b_u, p_u)`` for all
    users and ``(b_i, q_i)`` for all items; ``μ`` is the mean rating. ``fold_in`` solves a
    new user. Defaults were chosen on a seeded 10% validation split of MovieLens 100K
    ``u1.base`` (never on ``u1.test``). Prediction and state: see ``RatingFactors``.
    """

    name: ClassVar[str] = "mf"
    _params: ClassVar[tuple[str, ...]] = (
        "n_factors",
        "solver",
        "epochs",
        "lr",
        "lr_decay",
        "reg_bias",
        "reg_factors",
        "init_std",
        "batch_size",
        "seed",
    )

    mu_: float
    bu_: FloatArray
    bi_: FloatArray
    P_: FloatArray
    Q_: FloatArray
    r_min_: float
    r_max_: float
    subjects_: SubjectIndex

    def __init__(
        self,
        n_factors: int = 100,
        solver: str = "sgd",
        epochs: int = 60,
        lr: float = 0.007,
        lr_decay: float = 1.0,
        reg_bias: float = 0.02,
        reg_factors: float = 0.1,
        init_std: float = 0.05,
        batch_size: int = 64,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> None:
        if solver not in SOLVERS:
            raise ConfigError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
        for label, value in (("n_factors", n_factors), ("epochs", epochs), ("batch", batch_size)):
            if value < 1:
                raise ConfigError(f"{label} must be >= 1, got {value}")
        if not 0 < lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], got {lr_decay}")
        for label, reg in (("reg_bias", reg_bias), ("reg_factors", reg_factors)):
            if not reg >= 0:
                raise ConfigError(f"{label} must be >= 0, got {reg}")
        self.n_factors = n_factors
        self.solver = solver
        self.epochs = epochs
        self.lr = check_positive("lr", lr)
        self.lr_decay = lr_decay
        self.reg_bias = float(reg_bias)
        self.reg_factors = float(reg_factors)
        self.init_std = check_positive("init_std", init_std)
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress

    # -- fitting -----------------------------------------------------------------------

    def fit(self, data: Interactions) -> Self:
        user, item, r = explicit_ratings(data)
        n_users, n_items = n_users_of(data), n_items_of(data)
        rng = np.random.default_rng(self.seed)
        self.mu_ = float(r.mean())
        self.r_min_, self.r_max_ = float(r.min()), float(r.max())
        self.bu_ = np.zeros(n_users)
        self.bi_ = np.zeros(n_items)
        self.P_ = rng.normal(0.0, self.init_std, (n_users, self.n_factors))
        self.Q_ = rng.normal(0.0, self.init_std, (n_items, self.n_factors))
        self.subjects_ = SubjectIndex(data.users.ids[:n_users])
        self._prepare(data, n_users, n_items)
        for epoch in range(self.epochs):
            if self.solver == "als":
                self._als_epoch(user, item, r)
            else:
                self._sgd_epoch(user, item, r, rng, self.lr * self.lr_decay**epoch)
            self._report(epoch, user, item, r)
        return self

    def _prepare(self, data: Interactions, n_users: int, n_items: int) -> None:
        """Hook for state beyond the biases and factors (SVD++'s implicit sets)."""

    def _report(self, epoch: int, user: IntArray, item: IntArray, r: FloatArray) -> None:
        if self.progress is None and not log.isEnabledFor(logging.DEBUG):
            return
        rmse = float(np.sqrt(np.mean((self._raw(user, item) - r) ** 2)))
        log.debug("%s epoch %d/%d: train RMSE %.4f", self.name, epoch + 1, self.epochs, rmse)
        if self.progress is not None:
            self.progress(epoch + 1, self.epochs, rmse)

    def _sgd_epoch(
        self, user: IntArray, item: IntArray, r: FloatArray, rng: np.random.Generator, lr: float
    ) -> None:
        bu, bi, p, q = self.bu_, self.bi_, self.P_, self.Q_
        rb, rf = self.reg_bias, self.reg_factors
        order = rng.permutation(r.shape[0])
        for start in range(0, order.shape[0], self.batch_size):
            b = order[start : start + self.batch_size]
            u, i = user[b], item[b]
            pu, qi = p[u], q[i]
            e = r[b] - self.mu_ - bu[u] - bi[i] - np.einsum("ij,ij->i", pu, qi)
            np.add.at(bu, u, lr * (e - rb * bu[u]))
            np.add.at(bi, i, lr * (e - rb * bi[i]))
            np.add.at(p, u, lr * (e[:, None] * qi - rf * pu))
            np.add.at(q, i, lr * (e[:, None] * pu - rf * qi))

    def _als_epoch(self, user: IntArray, item: IntArray, r: FloatArray) -> None:
        k = self.n_factors
        reg = np.concatenate([[self.reg_bias], np.full(k, self.reg_factors)])
        ones = np.ones(r.shape[0])
        x = ridge_by_group(
            user,
            self.P_.shape[0],
            np.hstack([ones[:, None], self.Q_[item]]),
            ones,
            r - self.mu_ - self.bi_[item],
            reg,
        )
        self.bu_, self.P_ = x[:, 0].copy(), x[:, 1:].copy()
        y = ridge_by_group(
            item,
            self.Q_.shape[0],
            np.hstack([ones[:, None], self.P_[user]]),
            ones,
            r - self.mu_ - self.bu_[user],
            reg,
        )
        self.bi_, self.Q_ = y[:, 0].copy(), y[:, 1:].copy()

    def fold_in(self, items: IntArray, ratings: FloatArray) -> tuple[float, FloatArray]:
        """``(b_u, p_u)`` of a new user from its ratings, items fixed (one ALS user solve)."""
        require_fitted(self, "Q_")
        i = np.asarray(items, dtype=np.int64)
        ok = (i >= 0) & (i < self.Q_.shape[0])
        i, r = i[ok], np.asarray(ratings, dtype=np.float64)[ok]
        k = self.n_factors
        reg = np.concatenate([[self.reg_bias], np.full(k, self.reg_factors)])
        x = ridge_by_group(
            np.zeros(i.shape[0], np.int64),
            1,
            np.hstack([np.ones((i.shape[0], 1)), self.Q_[i]]),
            np.ones(i.shape[0]),
            r - self.mu_ - self.bi_[i] - self._fold_in_offset(i),
            reg,
        )[0]
        return float(x[0]), x[1:]

    def _fold_in_offset(self, items: IntArray) -> FloatArray:
        """What a new user's rated items add to ``r̂`` besides ``b_u`` and ``p_u``."""
        return np.zeros(items.shape[0])


class BiasedMFALS(BiasedMF):
    """``BiasedMF`` fitted by ALS, with defaults tuned for it (same validation split)."""

    name: ClassVar[str] = "mf_als"
    _params: ClassVar[tuple[str, ...]] = (
        "n_factors",
        "epochs",
        "reg_bias",
        "reg_factors",
        "init_std",
        "seed",
    )

    def __init__(
        self,
        n_factors: int = 10,
        epochs: int = 15,
        reg_bias: float = 5.0,
        reg_factors: float = 15.0,
        init_std: float = 0.05,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> None:
        super().__init__(
            n_factors=n_factors,
            solver="als",
            epochs=epochs,
            reg_bias=reg_bias,
            reg_factors=reg_factors,
            init_std=init_std,
            seed=seed,
            progress=progress,
        )


class SVDpp(BiasedMF):
    """SVD++ (Koren 2008): ``p_u`` plus ``|N(u)|^-½ Σ y_j`` over the subject's items ``N(u)``.

    ``N(u)`` holds the items of the subject's events whose type weighs > 0
    (``event_weights``), ratings included; at scoring time the context's recent items
    join it, so an unknown shopper gets a profile from its session alone. Trained by
    mini-batch SGD over ratings (``reg_implicit`` on ``y``).

    Learned state: that of ``BiasedMF`` plus ``Y_`` and ``history_`` (``N(u)`` as CSR).
    """

    name: ClassVar[str] = "svdpp"
    _params: ClassVar[tuple[str, ...]] = (
        "n_factors",
        "epochs",
        "lr",
        "lr_decay",
        "reg_bias",
        "reg_factors",
        "reg_implicit",
        "init_std",
        "batch_size",
        "seed",
        "event_weights",
    )

    Y_: FloatArray
    history_: Any
    _norm: Any  # history_ with rows scaled by |N(u)|^-1/2
    _imp: FloatArray  # _norm @ Y_

    def __init__(
        self,
        n_factors: int = 20,
        epochs: int = 25,
        lr: float = 0.007,
        lr_decay: float = 1.0,
        reg_bias: float = 0.02,
        reg_factors: float = 0.05,
        reg_implicit: float = 0.05,
        init_std: float = 0.05,
        batch_size: int = 64,
        seed: int = 0,
        event_weights: Mapping[str, float] | None = None,
        progress: Progress | None = None,
    ) -> None:
        super().__init__(
            n_factors=n_factors,
            solver="sgd",
            epochs=epochs,
            lr=lr,
            lr_decay=lr_decay,
            reg_bias=reg_bias,
            reg_factors=reg_factors,
            init_std=init_std,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
        )
        if not reg_implicit >= 0:
            raise ConfigError(f"reg_implicit must be >= 0, got {reg_implicit}")
        self.reg_implicit = float(reg_implicit)
        self.event_weights = resolve_event_weights(event_weights)

    def _prepare(self, data: Interactions, n_users: int, n_items: int) -> None:
        self.history_ = user_item_matrix(data, self._implicit_weights, binary=True, n_items=n_items)
        self.Y_ = np.random.default_rng(self.seed + 1).normal(
            0.0, self.init_std, (n_items, self.n_factors)
        )
        self._norm = _row_normalized(self.history_)
        self._imp = self._norm @ self.Y_

    @property
    def _implicit_weights(self) -> dict[str, float]:
        """``event_weights`` with ratings always counted in ``N(u)``."""
        return dict(self.event_weights, rate=max(self.event_weights.get("rate", 0.0), 1.0))

    def _user_vectors(self, users: IntArray) -> FloatArray:
        return self.P_[users] + self._imp[users]

    def _sgd_epoch(
        self, user: IntArray, item: IntArray, r: FloatArray, rng: np.random.Generator, lr: float
    ) -> None:
        bu, bi, p, q, y = self.bu_, self.bi_, self.P_, self.Q_, self.Y_
        rb, rf, ry = self.reg_bias, self.reg_factors, self.reg_implicit
        norm = self._norm
        pattern = norm.copy()
        pattern.data[:] = 1.0
        order = rng.permutation(r.shape[0])
        for start in range(0, order.shape[0], self.batch_size):
            b = order[start : start + self.batch_size]
            u, i = user[b], item[b]
            nu = norm[u]
            imp = nu @ y
            pu, qi = p[u], q[i]
            e = r[b] - self.mu_ - bu[u] - bi[i] - np.einsum("ij,ij->i", pu + imp, qi)
            np.add.at(bu, u, lr * (e - rb * bu[u]))
            np.add.at(bi, i, lr * (e - rb * bi[i]))
            np.add.at(p, u, lr * (e[:, None] * qi - rf * pu))
            np.add.at(q, i, lr * (e[:, None] * (pu + imp) - rf * qi))
            touched = pattern[u]
            counts = np.asarray(touched.sum(axis=0)).ravel()
            rows = np.flatnonzero(counts)
            grad = nu.T @ (e[:, None] * qi)
            y[rows] += lr * (grad[rows] - ry * counts[rows, None] * y[rows])
        self._imp = norm @ y

    def _als_epoch(self, user: IntArray, item: IntArray, r: FloatArray) -> None:
        raise AssertionError("SVDpp trains by SGD only")  # pragma: no cover

    def _fold_in_offset(self, items: IntArray) -> FloatArray:
        imp = self.Y_[items].sum(axis=0) / np.sqrt(max(items.shape[0], 1))
        return np.asarray(self.Q_[items] @ imp, dtype=np.float64)

    def fold_in(self, items: IntArray, ratings: FloatArray) -> tuple[float, FloatArray]:
        """``(b_u, p_u + |N(u)|^-½ Σ y_j)`` of a new user, ``N(u)`` its rated items."""
        i = np.asarray(items, dtype=np.int64)
        bias, pu = super().fold_in(items, ratings)
        i = i[(i >= 0) & (i < self.Y_.shape[0])]
        return bias, pu + self.Y_[i].sum(axis=0) / np.sqrt(max(i.shape[0], 1))

    def _context_vectors(self, contexts: Sequence[Context], users: IntArray) -> FloatArray:
        known = users >= 0
        x = context_matrix(
            contexts, self.history_, self.subjects_, self._implicit_weights, binary=True
        )
        implicit = np.asarray(_row_normalized(x) @ self.Y_, dtype=np.float64)
        return self.P_[np.where(known, users, 0)] * known[:, None] + implicit

    def _arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        return super()._arrays() | {"Y": self.Y_} | history_arrays(self.history_, self.subjects_)

    @classmethod
    def _array_names(cls) -> tuple[str, ...]:
        return (*super()._array_names(), "Y", *HISTORY_ARRAYS)

    def _restore(self, arrays: Mapping[str, np.ndarray[Any, Any]], n_items: int) -> None:
        self.Y_ = arrays["Y"]
        self.history_, _ = load_history(arrays, n_items)
        self._norm = _row_normalized(self.history_)
        self._imp = self._norm @ self.Y_


def _row_normalized(m: Any) -> Any:
    """CSR ``m`` with each row scaled by ``1/sqrt(nnz of the row)``."""
    out = sp.csr_array(m, dtype=np.float64, copy=True)
    counts = np.diff(out.indptr)
    out.data[:] = np.repeat(1.0 / np.sqrt(np.maximum(counts, 1)), counts)
    return out
