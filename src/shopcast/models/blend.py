"""A linear blend of rating models, its weights fitted on a holdout of the training ratings."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from shopcast.errors import ConfigError, ModelError
from shopcast.models._base import (
    Context,
    FloatArray,
    IntArray,
    Interactions,
    RatingPredictor,
    Recommender,
    TimedRatingPredictor,
    Vocabulary,
)
from shopcast.models._common import gather, load_model, require_fitted, save_model
from shopcast.models._data import (
    SubjectIndex,
    explicit_rating_rows,
    explicit_ratings,
    n_items_of,
    n_users_of,
    subset_rows,
)

log = logging.getLogger(__name__)

#: The default components: ``(registry name, hyperparameters)``.
DEFAULT_COMPONENTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("mf_bayes", {}),
    ("svdpp", {}),
    ("mf_als", {}),
    ("mf", {}),
)


class Blend:
    """``r̂ = w₀ + Σ_j w_j r̂_j`` over rating models ``j``, clipped to the training range.

    ``fit`` holds out a seeded random ``holdout`` fraction of the ratings, fits every
    component on the rest, fits ``w`` by ridge regression (``reg``, intercept not
    penalized) of the held-out ratings on the components' predictions, then refits every
    component on all the data. ``score`` blends the components' ``score_all`` the same way.

    ``feature_weighted`` makes each weight a linear function of the log support of the
    user and of the item (``log(1 + ratings)`` in the data the components were fitted on):
    ``r̂ = w₀ + a s_u + b s_i + Σ_j (w_j + w_j^u s_u + w_j^i s_i) r̂_j`` (feature-weighted
    linear stacking, Sill et al. 2009), all fitted by the same ridge.

    Learned state: ``weights_`` (intercept first; then ``w``, with ``feature_weighted``
    followed by ``w^u``, ``w^i``, ``a``, ``b``), ``components_``, ``r_min_``, ``r_max_``;
    with ``feature_weighted`` also ``user_support_``, ``item_support_``, ``subjects_``.
    """

    name: ClassVar[str] = "blend"

    weights_: FloatArray
    components_: list[Recommender]
    r_min_: float
    r_max_: float
    n_items_: int
    user_support_: FloatArray
    item_support_: FloatArray
    subjects_: SubjectIndex

    def __init__(
        self,
        components: Sequence[Sequence[Any]] = DEFAULT_COMPONENTS,
        holdout: float = 0.1,
        reg: float = 1.0,
        seed: int = 0,
        feature_weighted: bool = False,
    ) -> None:
        from shopcast.models import model_class

        parsed: list[tuple[str, dict[str, Any]]] = []
        for entry in components:
            name, params = entry
            if not isinstance(name, str) or not isinstance(params, Mapping):
                raise ConfigError(f"a blend component is (name, params), got {entry!r}")
            if not isinstance(model_class(name)(**params), RatingPredictor):
                raise ConfigError(f"blend component {name!r} does not predict ratings")
            parsed.append((name, dict(params)))
        if not parsed:
            raise ConfigError("a blend needs at least one component")
        if not 0 < holdout < 1:
            raise ConfigError(f"holdout must be in (0, 1), got {holdout}")
        if not reg >= 0:
            raise ConfigError(f"reg must be >= 0, got {reg}")
        self.components = parsed
        self.holdout = holdout
        self.reg = float(reg)
        self.seed = seed
        self.feature_weighted = bool(feature_weighted)

    def fit(self, data: Interactions) -> Self:
        r = explicit_ratings(data)[2]
        held = _holdout_mask(data, self.holdout, self.seed)
        n = len(self.components)
        if held.sum() > 2 * (n + 1):
            part = subset_rows(data, held)
            rows = explicit_rating_rows(part)
            hu, hi, hr, ht = part.user[rows], part.item[rows], part.value[rows], part.ts[rows]
            train = subset_rows(data, ~held)
            preds = np.column_stack([_at(m.fit(train), hu, hi, ht) for m in self._build()])
            su, si = _supports(train)
            self.weights_ = _ridge(self._design(preds, _take(su, hu), _take(si, hi)), hr, self.reg)
        else:  # too few ratings to hold any out: the plain mean
            mean = [1.0 / n] * n
            self.weights_ = np.array([0.0, *mean, *[0.0] * (2 * n + 2)][: self._n_weights()])
        log.debug("blend weights %s", np.round(self.weights_, 4).tolist())
        self.components_ = [m.fit(data) for m in self._build()]
        if self.feature_weighted:
            self.user_support_, self.item_support_ = _supports(data)
            self.subjects_ = SubjectIndex(data.users.ids[: self.user_support_.shape[0]])
        self.r_min_, self.r_max_ = float(r.min()), float(r.max())
        self.n_items_ = n_items_of(data)
        return self

    def _n_weights(self) -> int:
        n = len(self.components)
        return 3 * n + 3 if self.feature_weighted else n + 1

    def _design(self, preds: FloatArray, su: FloatArray, si: FloatArray) -> FloatArray:
        """The ridge's inputs: the predictions (times the supports, and the supports,
        when ``feature_weighted``)."""
        if not self.feature_weighted:
            return preds
        parts = [preds, preds * su[:, None], preds * si[:, None], su[:, None], si[:, None]]
        return np.hstack(parts)

    def _blend(self, preds: FloatArray, user: IntArray, item: IntArray) -> FloatArray:
        if self.feature_weighted:
            su = _take(self.user_support_, user)
            si = _take(self.item_support_, item)
        else:
            su = si = np.zeros(0)
        blended = self.weights_[0] + self._design(preds, su, si) @ self.weights_[1:]
        return np.asarray(np.clip(blended, self.r_min_, self.r_max_), dtype=np.float64)

    def _build(self) -> list[Any]:
        from shopcast.models import model_class

        return [model_class(name)(**params) for name, params in self.components]

    def predict(self, user: IntArray, item: IntArray) -> FloatArray:
        """Clipped blend of the components' predictions."""
        require_fitted(self, "weights_")
        preds = np.column_stack([_rating(m).predict(user, item) for m in self.components_])
        return self._blend(preds, user, item)

    def predict_at(self, user: IntArray, item: IntArray, ts: FloatArray) -> FloatArray:
        """``predict`` with each rating's time: components that take it
        (``TimedRatingPredictor``) predict at ``ts``, the others as in ``predict``."""
        require_fitted(self, "weights_")
        preds = np.column_stack([_at(m, user, item, ts) for m in self.components_])
        return self._blend(preds, user, item)

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return gather(self.score_all([context])[0], candidates)

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        """The blend of the components' unclipped ``r̂`` over all fitted items."""
        require_fitted(self, "weights_")
        n = len(self.components_)
        w = self.weights_
        total = np.full((len(contexts), self.n_items_), w[0])
        if self.feature_weighted:
            users = np.array([self.subjects_.of(c) for c in contexts], dtype=np.int64)
            su = _take(self.user_support_, users)[:, None]
            si = _take(self.item_support_, np.arange(self.n_items_))[None, :]
            total += w[3 * n + 1] * su + w[3 * n + 2] * si
        for j, m in enumerate(self.components_):
            weight: Any = w[1 + j]
            if self.feature_weighted:
                weight = weight + w[1 + n + j] * su + w[1 + 2 * n + j] * si
            total += weight * m.score_all(contexts)  # type: ignore[attr-defined]
        return total

    def save(self, path: Path) -> None:
        require_fitted(self, "weights_")
        path = Path(path)
        save_model(
            path,
            self,
            params={
                "components": [[n, p] for n, p in self.components],
                "holdout": self.holdout,
                "reg": self.reg,
                "seed": self.seed,
                **self._feature_weighted_param(),
            },
            state={"n_items": self.n_items_, "r_min": self.r_min_, "r_max": self.r_max_},
            arrays={"weights": self.weights_, **self._support_arrays()},
        )
        for j, m in enumerate(self.components_):
            m.save(path / f"component{j}")

    def _feature_weighted_param(self) -> dict[str, bool]:
        """``feature_weighted`` for the saved parameters, left out where the class does
        not take it (subclasses that fix their blend) and it is off."""
        takes = "feature_weighted" in inspect.signature(type(self).__init__).parameters
        return {"feature_weighted": self.feature_weighted} if takes else {}

    def _support_arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        if not self.feature_weighted:
            return {}
        return {
            "user_support": self.user_support_,
            "item_support": self.item_support_,
            "subjects": self.subjects_.keys,
        }

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        from shopcast.models import model_class

        model, state, arrays = load_model(path, cls, items, ("weights",))
        if model.feature_weighted:
            names = ("user_support", "item_support", "subjects")
            arrays = {**arrays, **load_model(path, cls, items, names)[2]}
            model.user_support_ = arrays["user_support"]
            model.item_support_ = arrays["item_support"]
            model.subjects_ = SubjectIndex(arrays["subjects"].tolist())
        model.weights_ = arrays["weights"]
        model.r_min_, model.r_max_ = float(state["r_min"]), float(state["r_max"])
        model.n_items_ = int(state["n_items"])
        model.components_ = [
            model_class(name).load(Path(path) / f"component{j}", items)
            for j, (name, _) in enumerate(model.components)
        ]
        if model.weights_.shape != (model._n_weights(),):
            raise ModelError(f"{path} has {model.weights_.shape[0]} weights for its components")
        return model


def _rating(model: Recommender) -> RatingPredictor:
    assert isinstance(model, RatingPredictor)
    return model


def _at(model: Recommender, user: IntArray, item: IntArray, ts: FloatArray) -> FloatArray:
    """``model``'s ratings at times ``ts`` when it takes them, else its ``predict``."""
    if isinstance(model, TimedRatingPredictor):
        return model.predict_at(user, item, ts)
    return _rating(model).predict(user, item)


def _supports(data: Interactions) -> tuple[FloatArray, FloatArray]:
    """``log(1 + ratings)`` of every user and every item of ``data``."""
    user, item, _ = explicit_ratings(data)
    n_u = np.bincount(user, minlength=n_users_of(data))
    n_i = np.bincount(item, minlength=n_items_of(data))
    return np.log1p(n_u).astype(np.float64), np.log1p(n_i).astype(np.float64)


def _take(values: FloatArray, index: IntArray) -> FloatArray:
    """``values[index]``, 0 where ``index`` is outside ``values`` (unknown users, items)."""
    idx = np.asarray(index, dtype=np.int64)
    ok = (idx >= 0) & (idx < values.shape[0])
    return np.where(ok, values[np.where(ok, idx, 0)], 0.0)


def _holdout_mask(data: Interactions, fraction: float, seed: int) -> Any:
    """A seeded random ``fraction`` of the rating events; each subject keeps one rating."""
    from shopcast.domain import EventType
    from shopcast.models._base import EVENT_CODES

    rated = (data.type == EVENT_CODES[EventType.RATE]) & np.isfinite(data.value)
    held = rated & (np.random.default_rng(seed).random(len(data)) < fraction)
    kept = np.bincount(data.user[rated & ~held], minlength=len(data.users))
    return held & (kept[data.user] > 0)


def _ridge(x: FloatArray, y: FloatArray, reg: float) -> FloatArray:
    """``[w₀, w]`` minimizing ``‖y - w₀ - x w‖² + reg ‖w‖²``."""
    a = np.hstack([np.ones((x.shape[0], 1)), x])
    penalty = np.diag([0.0] + [reg] * x.shape[1])
    return np.asarray(np.linalg.solve(a.T @ a + penalty, a.T @ y), dtype=np.float64)
