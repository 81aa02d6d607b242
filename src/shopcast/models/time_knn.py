"""Temporal neighbourhood on baseline residuals: ratings a user gave close in time err alike.

Baselines ``b_ui = μ + b_u + b_i`` come from regularized ALS (as in ``knn_baseline``). A
rating of user ``u`` at time ``t`` is predicted from the residuals of ``u``'s training
ratings, weighted by how close in time they were given:

    r̂_ui(t) = b_ui + Σ_j w_j (r_uj - b_uj) / (Σ_j w_j + shrinkage),  w_j = exp(-|t - t_j| / h)

with ``h`` the ``bandwidth`` in seconds (``causal``: over the ratings given strictly
before ``t`` only, as when predicting the next rating of a live session). This is the
non-parametric form of timeSVD++'s day-specific user bias ``b_{u,t}`` (Koren, KDD 2009):
with ``h`` of a day it is a smoothed ``b_{u,day}``; with ``h`` of a second or a minute it is
the bias of one rating session (MovieLens 100K stores ratings in bursts, presumably one
submitted page under one timestamp: 71 % of u1.base's ratings share their second with
another rating of the same user).

It helps only where the ratings to predict were given while the user's training ratings
were (random splits of a rating log, such as the MovieLens folds): on a validation split of
u1.base most of its gain in ``blend_time`` comes from ratings given in the same second,
i.e. after the rating to predict as often as before it; with ``causal`` little is left
(docs/benchmarks.md, Q1). On a split by time it falls back to the baselines. ``predict``
(no time given) returns ``b_ui``; ``predict_at`` applies the kernel at each rating's
timestamp; ``score`` ranks at ``context.now``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from shopcast.errors import ConfigError
from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import check_positive, gather, load_model, require_fitted, save_model
from shopcast.models._data import (
    SubjectIndex,
    als_baselines,
    explicit_rating_rows,
    n_items_of,
    n_users_of,
)
from shopcast.models.blend import Blend

_ARRAYS = ("user_bias", "item_bias", "resid", "ts", "starts", "subjects")


class TimeKNN:
    """Baselines plus the time-kernel-weighted mean residual of the user's own ratings.

    Learned state: ``mu_``, ``user_bias_``, ``item_bias_``, ``resid_`` and ``ts_`` (the
    training residuals and timestamps, grouped by user: user ``u``'s are
    ``starts_[u]:starts_[u + 1]``), ``r_min_``, ``r_max_``, ``n_items_``, ``subjects_``.
    """

    name: ClassVar[str] = "time_knn"
    named_only: ClassVar[bool] = True

    _params = ("bandwidth", "shrinkage", "causal", "reg_users", "reg_items", "n_epochs")

    mu_: float
    user_bias_: FloatArray
    item_bias_: FloatArray
    resid_: FloatArray
    ts_: FloatArray
    starts_: IntArray
    r_min_: float
    r_max_: float
    n_items_: int
    subjects_: SubjectIndex

    def __init__(
        self,
        bandwidth: float = 600.0,
        shrinkage: float = 3.0,
        causal: bool = False,
        reg_users: float = 15.0,
        reg_items: float = 10.0,
        n_epochs: int = 10,
    ) -> None:
        if not shrinkage >= 0:
            raise ConfigError(f"shrinkage must be >= 0, got {shrinkage}")
        if not n_epochs >= 1:
            raise ConfigError(f"n_epochs must be >= 1, got {n_epochs}")
        self.bandwidth = check_positive("bandwidth", float(bandwidth))
        self.shrinkage = float(shrinkage)
        self.causal = bool(causal)
        self.reg_users = check_positive("reg_users", float(reg_users))
        self.reg_items = check_positive("reg_items", float(reg_items))
        self.n_epochs = int(n_epochs)

    def fit(self, data: Interactions) -> Self:
        rows = explicit_rating_rows(data)
        user, item = data.user[rows], data.item[rows]
        r, ts = data.value[rows].astype(np.float64), data.ts[rows].astype(np.float64)
        n_users, n_items = n_users_of(data), n_items_of(data)
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
        order = np.lexsort((ts, user))
        self.mu_, self.user_bias_, self.item_bias_ = mu, bu, bi
        self.resid_ = (r - mu - bu[user] - bi[item])[order]
        self.ts_ = ts[order]
        counts = np.bincount(user, minlength=n_users)
        self.starts_ = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.r_min_, self.r_max_ = float(r.min()), float(r.max())
        self.n_items_ = n_items
        self.subjects_ = SubjectIndex(data.users.ids[:n_users])
        return self

    # -- prediction --------------------------------------------------------------------

    def predict(self, user: IntArray, item: IntArray) -> FloatArray:
        """Clipped baselines ``b_ui`` (no time given); unknown indices add nothing."""
        require_fitted(self, "resid_")
        return self._clip(self._baseline(user, item))

    def predict_at(self, user: IntArray, item: IntArray, ts: FloatArray) -> FloatArray:
        """Clipped ``b_ui`` plus the kernel-weighted residuals of ``u``'s ratings near ``ts``."""
        require_fitted(self, "resid_")
        u = np.asarray(user, dtype=np.int64)
        base = self._baseline(u, np.asarray(item, dtype=np.int64))
        return self._clip(base + self.time_offset(u, np.asarray(ts, dtype=np.float64)))

    def time_offset(self, user: IntArray, ts: FloatArray) -> FloatArray:
        """``Σ w_j r̃_uj / (Σ w_j + shrinkage)`` per (user, time) over the user's training
        ratings (``causal``: only those given strictly before the time); 0 for unknown
        users, users without training ratings and non-finite times."""
        require_fitted(self, "resid_")
        out = np.zeros(user.shape[0], dtype=np.float64)
        n_users = self.starts_.shape[0] - 1
        ok = np.flatnonzero((user >= 0) & (user < n_users) & np.isfinite(ts))
        if not ok.size:
            return out
        ok = ok[np.argsort(user[ok], kind="stable")]
        present, first = np.unique(user[ok], return_index=True)
        last = np.append(first[1:], ok.shape[0])
        for u, lo, hi in zip(present.tolist(), first.tolist(), last.tolist(), strict=True):
            a, b = self.starts_[u], self.starts_[u + 1]
            if a == b:
                continue
            q = ok[lo:hi]
            dt = ts[q, None] - self.ts_[None, a:b]
            w = np.exp(-np.abs(dt) / self.bandwidth)
            if self.causal:
                w = np.where(dt > 0, w, 0.0)
            out[q] = (w @ self.resid_[a:b]) / (w.sum(axis=1) + self.shrinkage)
        return out

    def _baseline(self, user: IntArray, item: IntArray) -> FloatArray:
        u = np.asarray(user, dtype=np.int64)
        i = np.asarray(item, dtype=np.int64)
        ku = (u >= 0) & (u < self.user_bias_.shape[0])
        ki = (i >= 0) & (i < self.item_bias_.shape[0])
        out = self.mu_ + np.where(ku, self.user_bias_[np.where(ku, u, 0)], 0.0)
        return np.asarray(out + np.where(ki, self.item_bias_[np.where(ki, i, 0)], 0.0))

    def _clip(self, values: FloatArray) -> FloatArray:
        return np.asarray(np.clip(values, self.r_min_, self.r_max_), dtype=np.float64)

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return gather(self.score_all([context])[0], candidates)

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        """Unclipped ``r̂`` of every fitted item for each context's subject at ``now``."""
        require_fitted(self, "resid_")
        users = np.array([self.subjects_.of(c) for c in contexts], dtype=np.int64)
        now = np.array([c.now for c in contexts], dtype=np.float64)
        n_bias = self.user_bias_.shape[0]
        known = (users >= 0) & (users < n_bias)
        bu = np.where(known, self.user_bias_[np.where(known, users, 0)], 0.0)
        offset = self.time_offset(users, now)
        items = np.zeros(self.n_items_)
        items[: self.item_bias_.shape[0]] = self.item_bias_[: self.n_items_]
        return np.asarray(self.mu_ + (bu + offset)[:, None] + items[None, :])

    # -- persistence -------------------------------------------------------------------

    def save(self, path: Path) -> None:
        require_fitted(self, "resid_")
        save_model(
            path,
            self,
            params={n: getattr(self, n) for n in self._params},
            state={
                "n_items": self.n_items_,
                "mu": self.mu_,
                "r_min": self.r_min_,
                "r_max": self.r_max_,
            },
            arrays={
                "user_bias": self.user_bias_,
                "item_bias": self.item_bias_,
                "resid": self.resid_,
                "ts": self.ts_,
                "starts": self.starts_,
                "subjects": self.subjects_.keys,
            },
        )

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        model, state, arrays = load_model(path, cls, items, _ARRAYS)
        model.mu_ = float(state["mu"])
        model.r_min_, model.r_max_ = float(state["r_min"]), float(state["r_max"])
        model.n_items_ = int(state["n_items"])
        model.user_bias_ = arrays["user_bias"].astype(np.float64)
        model.item_bias_ = arrays["item_bias"].astype(np.float64)
        model.resid_ = arrays["resid"].astype(np.float64)
        model.ts_ = arrays["ts"].astype(np.float64)
        model.starts_ = arrays["starts"].astype(np.int64)
        model.subjects_ = SubjectIndex(arrays["subjects"].tolist())
        return model


class Baselines:
    """``r̂_ui = μ + b_u + b_i`` by regularized ALS (Surprise's ``BaselineOnly``).

    In ``blend_time`` it lets the blend weigh the baselines apart from the kernel terms
    of the ``time_knn`` members (each of which carries the same baselines).

    Learned state: ``mu_``, ``user_bias_``, ``item_bias_``, ``r_min_``, ``r_max_``,
    ``n_items_``, ``subjects_``.
    """

    name: ClassVar[str] = "baseline"
    named_only: ClassVar[bool] = True

    _params = ("reg_users", "reg_items", "n_epochs")

    mu_: float
    user_bias_: FloatArray
    item_bias_: FloatArray
    r_min_: float
    r_max_: float
    n_items_: int
    subjects_: SubjectIndex

    def __init__(
        self, reg_users: float = 15.0, reg_items: float = 10.0, n_epochs: int = 10
    ) -> None:
        if not n_epochs >= 1:
            raise ConfigError(f"n_epochs must be >= 1, got {n_epochs}")
        self.reg_users = check_positive("reg_users", float(reg_users))
        self.reg_items = check_positive("reg_items", float(reg_items))
        self.n_epochs = int(n_epochs)

    def fit(self, data: Interactions) -> Self:
        rows = explicit_rating_rows(data)
        user, item = data.user[rows], data.item[rows]
        r = data.value[rows].astype(np.float64)
        n_users, n_items = n_users_of(data), n_items_of(data)
        self.mu_, self.user_bias_, self.item_bias_ = als_baselines(
            user,
            item,
            r,
            n_users,
            n_items,
            reg_users=self.reg_users,
            reg_items=self.reg_items,
            n_epochs=self.n_epochs,
        )
        self.r_min_, self.r_max_ = float(r.min()), float(r.max())
        self.n_items_ = n_items
        self.subjects_ = SubjectIndex(data.users.ids[:n_users])
        return self

    def predict(self, user: IntArray, item: IntArray) -> FloatArray:
        """Clipped ``μ + b_u + b_i``; unknown indices add nothing."""
        require_fitted(self, "user_bias_")
        u = np.asarray(user, dtype=np.int64)
        i = np.asarray(item, dtype=np.int64)
        ku = (u >= 0) & (u < self.user_bias_.shape[0])
        ki = (i >= 0) & (i < self.item_bias_.shape[0])
        out = self.mu_ + np.where(ku, self.user_bias_[np.where(ku, u, 0)], 0.0)
        out = out + np.where(ki, self.item_bias_[np.where(ki, i, 0)], 0.0)
        return np.asarray(np.clip(out, self.r_min_, self.r_max_), dtype=np.float64)

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return gather(self.score_all([context])[0], candidates)

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        """Unclipped ``μ + b_u + b_i`` of every fitted item for each context's subject."""
        require_fitted(self, "user_bias_")
        users = np.array([self.subjects_.of(c) for c in contexts], dtype=np.int64)
        known = (users >= 0) & (users < self.user_bias_.shape[0])
        bu = np.where(known, self.user_bias_[np.where(known, users, 0)], 0.0)
        return np.asarray(self.mu_ + bu[:, None] + self.item_bias_[None, : self.n_items_])

    def save(self, path: Path) -> None:
        require_fitted(self, "user_bias_")
        save_model(
            path,
            self,
            params={n: getattr(self, n) for n in self._params},
            state={
                "n_items": self.n_items_,
                "mu": self.mu_,
                "r_min": self.r_min_,
                "r_max": self.r_max_,
            },
            arrays={
                "user_bias": self.user_bias_,
                "item_bias": self.item_bias_,
                "subjects": self.subjects_.keys,
            },
        )

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        names = ("user_bias", "item_bias", "subjects")
        model, state, arrays = load_model(path, cls, items, names)
        model.mu_ = float(state["mu"])
        model.r_min_, model.r_max_ = float(state["r_min"]), float(state["r_max"])
        model.n_items_ = int(state["n_items"])
        model.user_bias_ = arrays["user_bias"].astype(np.float64)
        model.item_bias_ = arrays["item_bias"].astype(np.float64)
        model.subjects_ = SubjectIndex(arrays["subjects"].tolist())
        return model


#: Components of ``blend_time``: ``blend_knn``'s four, the baselines alone, and ``time_knn``
#: at (bandwidth s, shrinkage) (1, 3), (1, 10), (60, 10), (300, 1), (600, 3), (86400, 3):
#: chosen by greedy forward selection (10-fold CV of the blend weights) on a validation
#: split of u1.base. Without ``baseline`` the blend must weigh the baselines the time
#: members carry as the sum of their weights (validation 0.8721 instead of 0.8676).
BLEND_COMPONENTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("glocal_k", {}),
    ("mf_bayes", {}),
    ("knn_baseline", {"user_based": True}),
    ("knn_baseline", {"user_based": False}),
    ("baseline", {}),
    *(
        ("time_knn", {"bandwidth": h, "shrinkage": c})
        for h, c in (
            (1.0, 3.0),
            (1.0, 10.0),
            (60.0, 10.0),
            (300.0, 1.0),
            (600.0, 3.0),
            (86400.0, 3.0),
        )
    ),
)


class TimeBlend(Blend):
    """``Blend`` of ``blend_knn``'s components and ``time_knn`` at several bandwidths
    (from ratings given in the same second to a day).

    The time members share the baselines, so the blend weighs each bandwidth's kernel
    term on its own. Feature-weighted by default (weights linear in the user's and the
    item's log support; 0.0017 better on the validation split). Same fitting as
    ``Blend`` (ridge on a seeded holdout of the training ratings, at their timestamps;
    then every component refitted on all of them); rate with ``predict_at`` (``predict``
    without times leaves the time members at their baselines).
    """

    name: ClassVar[str] = "blend_time"
    named_only: ClassVar[bool] = True

    def __init__(
        self,
        components: Sequence[Sequence[Any]] = BLEND_COMPONENTS,
        holdout: float = 0.1,
        reg: float = 1.0,
        seed: int = 0,
        feature_weighted: bool = True,
    ) -> None:
        super().__init__(
            components=components,
            holdout=holdout,
            reg=reg,
            seed=seed,
            feature_weighted=feature_weighted,
        )
