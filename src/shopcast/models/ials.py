"""Implicit-feedback ALS with confidence weights (Hu, Koren & Volinsky, ICDM 2008)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

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
    history_arrays,
    load_history,
    n_items_of,
    ridge_by_group,
    user_item_matrix,
)
from shopcast.models.mf import Progress

log = logging.getLogger(__name__)


class ImplicitALS:
    """Minimize ``Σ_ui c_ui (p_ui - x_u·y_i)² + reg (‖x‖² + ‖y‖²)`` by exact alternating solves.

    ``w_ui`` sums the event weights of subject ``u`` on item ``i``; preference ``p_ui`` is
    1 where ``w_ui > 0`` (else 0) and confidence ``c_ui = 1 + alpha · w_ui``. Each user
    step solves ``(YᵀY + Yᵀ(C_u - I)Y + reg·I) x_u = YᵀC_u p_u`` for all users at once
    (the item step likewise). ``score`` gives ``x_u·y_i``: the fitted ``x_u`` when the
    context adds no recent items, otherwise ``x_u`` folded in (one user solve) from the
    subject's fitted row plus its recent items, which also covers unseen shoppers.

    Learned state: ``P_`` (users), ``Q_`` (items), ``history_`` (``w`` as CSR), ``subjects_``.
    """

    name: ClassVar[str] = "ials"

    P_: FloatArray
    Q_: FloatArray
    history_: Any
    subjects_: SubjectIndex

    def __init__(
        self,
        n_factors: int = 64,
        reg: float = 0.1,
        alpha: float = 10.0,
        iterations: int = 15,
        init_std: float = 0.01,
        event_weights: Mapping[str, float] | None = None,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> None:
        for label, value in (("n_factors", n_factors), ("iterations", iterations)):
            if value < 1:
                raise ConfigError(f"{label} must be >= 1, got {value}")
        if not alpha >= 0:
            raise ConfigError(f"alpha must be >= 0, got {alpha}")
        self.n_factors = n_factors
        self.reg = check_positive("reg", reg)
        self.alpha = float(alpha)
        self.iterations = iterations
        self.init_std = check_positive("init_std", init_std)
        self.event_weights = resolve_event_weights(event_weights)
        self.seed = seed
        self.progress = progress

    def fit(self, data: Interactions) -> Self:
        n_items = n_items_of(data)
        w = user_item_matrix(data, self.event_weights, binary=False, n_items=n_items)
        rng = np.random.default_rng(self.seed)
        self.P_ = rng.normal(0.0, self.init_std, (w.shape[0], self.n_factors))
        self.Q_ = rng.normal(0.0, self.init_std, (n_items, self.n_factors))
        self.history_ = w
        self.subjects_ = SubjectIndex(data.users.ids[: w.shape[0]])
        coo = w.tocoo()
        user, item = coo.row.astype(np.int64), coo.col.astype(np.int64)
        conf = 1.0 + self.alpha * coo.data
        for it in range(self.iterations):
            self.P_ = self._solve(user, w.shape[0], self.Q_, item, conf)
            self.Q_ = self._solve(item, n_items, self.P_, user, conf)
            log.debug("ials iteration %d/%d", it + 1, self.iterations)
            if self.progress is not None:
                self.progress(it + 1, self.iterations, float("nan"))
        return self

    def _solve(
        self,
        group: IntArray,
        n_groups: int,
        other: FloatArray,
        other_idx: IntArray,
        conf: FloatArray,
    ) -> FloatArray:
        """One side's factors given the other side's (``other``)."""
        return ridge_by_group(
            group,
            n_groups,
            other[other_idx],
            conf - 1.0,
            conf,
            np.full(self.n_factors, self.reg),
            gram0=other.T @ other,
        )

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return gather(self.score_all([context])[0], candidates)

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        require_fitted(self, "Q_")
        users = np.array([self.subjects_.of(c) for c in contexts], dtype=np.int64)
        vectors = np.zeros((len(contexts), self.n_factors))
        fresh = np.array(
            [len(c.recent_items) > 0 or u < 0 for c, u in zip(contexts, users, strict=True)],
            dtype=np.bool_,
        )
        fitted = ~fresh & (users >= 0)
        vectors[fitted] = self.P_[users[fitted]]
        if fresh.any():
            chosen = [c for c, f in zip(contexts, fresh, strict=True) if f]
            x = context_matrix(
                chosen, self.history_, self.subjects_, self.event_weights, binary=False
            ).tocoo()
            conf = 1.0 + self.alpha * x.data
            vectors[fresh] = self._solve(
                x.row.astype(np.int64), len(chosen), self.Q_, x.col.astype(np.int64), conf
            )
        return np.asarray(vectors @ self.Q_.T, dtype=np.float64)

    def save(self, path: Path) -> None:
        require_fitted(self, "Q_")
        save_model(
            path,
            self,
            params={
                "n_factors": self.n_factors,
                "reg": self.reg,
                "alpha": self.alpha,
                "iterations": self.iterations,
                "init_std": self.init_std,
                "event_weights": self.event_weights,
                "seed": self.seed,
            },
            state={"n_items": int(self.Q_.shape[0])},
            arrays={"P": self.P_, "Q": self.Q_, **history_arrays(self.history_, self.subjects_)},
        )

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        model, state, arrays = load_model(path, cls, items, ("P", "Q", *HISTORY_ARRAYS))
        model.P_, model.Q_ = arrays["P"], arrays["Q"]
        model.history_, model.subjects_ = load_history(arrays, int(state["n_items"]))
        return model
