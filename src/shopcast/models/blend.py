"""A linear blend of rating models, its weights fitted on a holdout of the training ratings."""

from __future__ import annotations

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
from shopcast.models._data import explicit_rating_rows, explicit_ratings, n_items_of, subset_rows

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

    Learned state: ``weights_`` (intercept first), ``components_``, ``r_min_``, ``r_max_``.
    """

    name: ClassVar[str] = "blend"

    weights_: FloatArray
    components_: list[Recommender]
    r_min_: float
    r_max_: float
    n_items_: int

    def __init__(
        self,
        components: Sequence[Sequence[Any]] = DEFAULT_COMPONENTS,
        holdout: float = 0.1,
        reg: float = 1.0,
        seed: int = 0,
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
            self.weights_ = _ridge(preds, hr, self.reg)
        else:  # too few ratings to hold any out: the plain mean
            self.weights_ = np.array([0.0] + [1.0 / n] * n)
        log.debug("blend weights %s", np.round(self.weights_, 4).tolist())
        self.components_ = [m.fit(data) for m in self._build()]
        self.r_min_, self.r_max_ = float(r.min()), float(r.max())
        self.n_items_ = n_items_of(data)
        return self

    def _build(self) -> list[Any]:
        from shopcast.models import model_class

        return [model_class(name)(**params) for name, params in self.components]

    def predict(self, user: IntArray, item: IntArray) -> FloatArray:
        """Clipped blend of the components' predictions."""
        require_fitted(self, "weights_")
        preds = np.column_stack([_rating(m).predict(user, item) for m in self.components_])
        blended = self.weights_[0] + preds @ self.weights_[1:]
        return np.asarray(np.clip(blended, self.r_min_, self.r_max_), dtype=np.float64)

    def predict_at(self, user: IntArray, item: IntArray, ts: FloatArray) -> FloatArray:
        """``predict`` with each rating's time: components that take it
        (``TimedRatingPredictor``) predict at ``ts``, the others as in ``predict``."""
        require_fitted(self, "weights_")
        preds = np.column_stack([_at(m, user, item, ts) for m in self.components_])
        blended = self.weights_[0] + preds @ self.weights_[1:]
        return np.asarray(np.clip(blended, self.r_min_, self.r_max_), dtype=np.float64)

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        return gather(self.score_all([context])[0], candidates)

    def score_all(self, contexts: Sequence[Context]) -> FloatArray:
        """The blend of the components' unclipped ``r̂`` over all fitted items."""
        require_fitted(self, "weights_")
        total = np.full((len(contexts), self.n_items_), self.weights_[0])
        for w, m in zip(self.weights_[1:], self.components_, strict=True):
            total += w * m.score_all(contexts)  # type: ignore[attr-defined]
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
            },
            state={"n_items": self.n_items_, "r_min": self.r_min_, "r_max": self.r_max_},
            arrays={"weights": self.weights_},
        )
        for j, m in enumerate(self.components_):
            m.save(path / f"component{j}")

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        from shopcast.models import model_class

        model, state, arrays = load_model(path, cls, items, ("weights",))
        model.weights_ = arrays["weights"]
        model.r_min_, model.r_max_ = float(state["r_min"]), float(state["r_max"])
        model.n_items_ = int(state["n_items"])
        model.components_ = [
            model_class(name).load(Path(path) / f"component{j}", items)
            for j, (name, _) in enumerate(model.components)
        ]
        if model.weights_.shape != (len(model.components_) + 1,):
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
