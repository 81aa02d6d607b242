"""Time-decayed item popularity."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import numpy.typing as npt

from shopcast.models._base import Context, FloatArray, IntArray, Interactions, Vocabulary
from shopcast.models._common import (
    SECONDS_PER_DAY,
    check_positive,
    gather,
    load_model,
    require_fitted,
    resolve_event_weights,
    save_model,
    top_indices,
    weight_array,
)

#: After ``unlearn``, a score within this fraction of what it was is rounding: 0.
UNLEARN_RESIDUE = 1e-9


class Popularity:
    """Popularity of each item: ``Σ w(type) · 2^((t - t_ref_) / half_life)`` over its events.

    ``t_ref_`` is the newest event time seen, so a score is the item's decayed
    popularity as of then (an event at ``t_ref_`` adds its full weight). When
    ``learn`` sees newer events, all scores are rescaled to the new ``t_ref_``;
    exponents are never positive, so nothing overflows. ``score`` ignores the
    context: popularity is the same for every shopper.

    Learned state: ``scores_`` (float64, one per item index) and ``t_ref_``. Not
    thread-safe: callers serialize ``learn`` with the other methods.
    """

    name: ClassVar[str] = "popularity"

    scores_: FloatArray
    t_ref_: float

    def __init__(
        self,
        half_life_days: float = 14.0,
        event_weights: Mapping[str, float] | None = None,
    ) -> None:
        self.half_life_days = check_positive("half_life_days", half_life_days)
        self.event_weights = resolve_event_weights(event_weights)

    def fit(self, data: Interactions) -> Self:
        self.scores_ = np.zeros(len(data.items), dtype=np.float64)
        self.t_ref_ = float(data.ts.max()) if len(data) else 0.0
        self._add(data)
        return self

    def learn(self, data: Interactions) -> None:
        """Add new events (and new items of ``data.items``) to the fitted scores."""
        require_fitted(self, "scores_")
        self._add(data)

    def unlearn(self, data: Interactions) -> None:
        """Take events that ``fit``/``learn`` added back out (an erasure).

        Each event's decayed weight is subtracted; a score left within rounding of 0
        becomes exactly 0 (no longer popular), and none goes below 0.
        """
        require_fitted(self, "scores_")
        n = self.scores_.shape[0]
        known = (data.item >= 0) & (data.item < n)
        if not known.any():
            return
        half_life = self.half_life_days * SECONDS_PER_DAY
        w = weight_array(self.event_weights)[data.type[known]] * np.exp2(
            (data.ts[known] - self.t_ref_) / half_life
        )
        sub = np.bincount(data.item[known], weights=w, minlength=n)
        left = self.scores_ - sub
        left[(sub > 0) & (left <= UNLEARN_RESIDUE * np.maximum(self.scores_, sub))] = 0.0
        self.scores_ = left

    def score(self, context: Context, candidates: IntArray) -> FloatArray:
        require_fitted(self, "scores_")
        return gather(self.scores_, candidates)

    def top(self, n: int, mask: npt.NDArray[np.bool_] | None = None) -> IntArray:
        """Indices of the ``n`` most popular items with a positive score, best first.

        ``mask`` (booleans over item indices, e.g. one category) restricts the choice;
        items beyond its end are excluded. Ties go to the lower index.
        """
        require_fitted(self, "scores_")
        eligible = self.scores_ > 0
        if mask is not None:
            m = np.asarray(mask, dtype=np.bool_)[: eligible.shape[0]]
            eligible[m.shape[0] :] = False
            eligible[: m.shape[0]] &= m
        idx = np.flatnonzero(eligible)
        return idx[top_indices(self.scores_[idx], n)]

    def save(self, path: Path) -> None:
        require_fitted(self, "scores_")
        save_model(
            path,
            self,
            params={"half_life_days": self.half_life_days, "event_weights": self.event_weights},
            state={"t_ref": self.t_ref_, "n_items": int(self.scores_.shape[0])},
            arrays={"scores": self.scores_},
        )

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self:
        model, state, arrays = load_model(path, cls, items, ("scores",))
        model.scores_ = arrays["scores"].astype(np.float64)
        model.t_ref_ = float(state["t_ref"])
        return model

    def _add(self, data: Interactions) -> None:
        size = max(self.scores_.shape[0], len(data.items), int(data.item.max(initial=-1)) + 1)
        if size > self.scores_.shape[0]:
            self.scores_ = np.concatenate([self.scores_, np.zeros(size - self.scores_.shape[0])])
        if not len(data):
            return
        half_life = self.half_life_days * SECONDS_PER_DAY
        newest = float(data.ts.max())
        if newest > self.t_ref_:
            self.scores_ *= 2.0 ** ((self.t_ref_ - newest) / half_life)
            self.t_ref_ = newest
        w = weight_array(self.event_weights)[data.type] * np.exp2(
            (data.ts - self.t_ref_) / half_life
        )
        self.scores_ += np.bincount(data.item, weights=w, minlength=size)
