"""The model protocol and the data a model sees.

- ``Vocabulary``: append-only mapping between external ids and dense indices. One
  item vocabulary is shared by every model fitted in one training run and grows
  online when new items appear, so indices stay stable while serving.
- ``Interactions``: a batch of events as numpy columns over the vocabularies (what
  ``fit`` and ``learn`` receive).
- ``Context``: what is known about the shopper at request time (live session).
- ``Recommender``: ``fit`` / ``score`` / ``save`` / ``load``;
  ``OnlineLearner.learn`` for incremental updates.

Learned state lives in attributes ending in ``_`` and is persisted as ``.npz`` +
JSON, never pickle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from shopcast.domain import EventType

if TYPE_CHECKING:
    import polars as pl

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Stable small-integer codes of event types (used in ``Interactions.type``).
EVENT_CODES: dict[EventType, int] = {t: i for i, t in enumerate(EventType)}


class Vocabulary:
    """Append-only id <-> index mapping."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        for i in ids:
            self.add(i)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def add(self, key: str) -> int:
        idx = self._index.get(key)
        if idx is None:
            idx = len(self._ids)
            self._ids.append(key)
            self._index[key] = idx
        return idx

    def index(self, key: str) -> int:
        """Index of ``key`` or -1 when unknown."""
        return self._index.get(key, -1)

    def indices(self, keys: Sequence[str], *, add: bool = False) -> IntArray:
        if add:
            return np.fromiter((self.add(k) for k in keys), dtype=np.int64, count=len(keys))
        get = self._index.get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def id(self, index: int) -> str:
        return self._ids[index]

    @property
    def ids(self) -> list[str]:
        return self._ids


@dataclass
class Interactions:
    """Events as numpy columns. All arrays have one entry per event, in time order."""

    users: Vocabulary
    items: Vocabulary
    user: IntArray
    item: IntArray
    type: IntArray
    ts: FloatArray
    value: FloatArray  # NaN where the event has no value

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @classmethod
    def from_frame(
        cls,
        frame: pl.DataFrame,
        *,
        users: Vocabulary | None = None,
        items: Vocabulary | None = None,
    ) -> Interactions:
        """Build from an event frame (``EVENT_COLUMNS``); events without an item are dropped.

        The subject of an event is ``u:<user_id>`` or, for anonymous shoppers,
        ``s:<session_id>``. Given vocabularies are extended in place.
        """
        from shopcast.models._frame import interactions_from_frame

        return interactions_from_frame(cls, frame, users=users, items=items)


@dataclass
class Context:
    """The shopper at request time. Item arrays hold indices of the item vocabulary."""

    now: float
    user_id: str | None = None
    session_id: str | None = None
    recent_items: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    recent_types: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    recent_ts: FloatArray = field(default_factory=lambda: np.empty(0, np.float64))


@runtime_checkable
class Recommender(Protocol):
    """A model: scores candidate items for a context. Higher is better.

    ``score`` must accept indices the model has never seen (beyond what it was
    fitted on) and give them 0.
    """

    name: ClassVar[str]

    def fit(self, data: Interactions) -> Self: ...

    def score(self, context: Context, candidates: IntArray) -> FloatArray: ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> Self: ...


@runtime_checkable
class OnlineLearner(Protocol):
    def learn(self, data: Interactions) -> None: ...


@runtime_checkable
class BatchScorer(Protocol):
    """Models that score the whole item vocabulary for many shoppers at once.

    Row ``r`` of the result holds the scores of every fitted item (index order) for
    ``contexts[r]``; the evaluation harness uses it for full-ranking metrics and
    falls back to ``score(context, arange(n_items))`` for models without it.
    """

    def score_all(self, contexts: Sequence[Context]) -> FloatArray: ...


@runtime_checkable
class RatingPredictor(Protocol):
    """Models that predict explicit ratings (Q1).

    ``user`` and ``item`` are indices into the ``users`` / ``items`` vocabularies of
    the ``Interactions`` the model was fitted on; unknown indices (-1 or beyond the
    fitted range) get the model's best prior (e.g. global mean + known biases).
    """

    def predict(self, user: IntArray, item: IntArray) -> FloatArray: ...


@runtime_checkable
class TimedRatingPredictor(Protocol):
    """Rating models whose prediction depends on when the rating is given.

    ``ts`` holds one epoch-seconds timestamp per (``user``, ``item``) pair; the
    evaluation harness calls ``predict_at`` instead of ``predict`` when the held-out
    ratings carry their timestamps (MovieLens does).
    """

    def predict_at(self, user: IntArray, item: IntArray, ts: FloatArray) -> FloatArray: ...
