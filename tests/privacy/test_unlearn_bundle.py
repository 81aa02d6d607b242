"""``unlearn_bundle``: what happens to each role of a bundle when a user is erased."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shopcast.domain import Event
from shopcast.models import CoVisitation, Interactions, Popularity, Vocabulary
from shopcast.privacy.unlearn import unlearn_bundle
from shopcast.training.bundle import ModelBundle

T0 = 1_700_000_000.0


class _Embeddings:
    """A stand-in for a model with per-user rows (like a two-tower model)."""

    name: ClassVar[str] = "embeddings"

    def __init__(self) -> None:
        self.rows = {"u:eve": np.ones(4), "u:ann": np.ones(4)}

    def forget(self, subjects: Sequence[str]) -> int:
        return sum(self.rows.pop(s, None) is not None for s in subjects)

    def fit(self, data: Any) -> _Embeddings:
        return self

    def score(self, context: Any, candidates: Any) -> Any:
        return np.zeros(len(candidates))

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path, items: Vocabulary) -> _Embeddings:
        return cls()


class _Opaque(_Embeddings):
    name: ClassVar[str] = "opaque"
    forget = None  # type: ignore[assignment]  # can neither unlearn nor forget


def test_each_role_reports_what_was_done() -> None:
    items = Vocabulary(["a", "b"])
    subjects = Vocabulary(["u:eve"])
    rows = [
        (1, Event(type="view", user_id="eve", item_id="a", timestamp=T0)),
        (2, Event(type="view", user_id="eve", item_id="b", timestamp=T0 + 1)),
    ]
    data = Interactions(
        users=subjects,
        items=items,
        user=np.array([0, 0]),
        item=np.array([0, 1]),
        type=np.array([0, 0]),
        ts=np.array([T0, T0 + 1]),
        value=np.array([np.nan, np.nan]),
    )
    embeddings = _Embeddings()
    bundle = ModelBundle(
        "v1",
        items,
        {
            "popularity": Popularity().fit(data),
            "covisit": CoVisitation().fit(data),
            "embedding": embeddings,  # type: ignore[dict-item]
            "other": _Opaque(),  # type: ignore[dict-item]
        },
        trained_until=2,
    )
    out = unlearn_bundle(bundle, rows, subjects, fitted_until=2)
    assert out == {
        "popularity": "unlearned",
        "covisit": "unlearned",
        "embedding": "forgotten",
        "other": "retrain",
    }
    assert set(embeddings.rows) == {"u:ann"}  # only the erased user's row went
    assert bundle.popularity.scores_.sum() == 0.0 and bundle.covisit.matrix_.nnz == 0
    only = unlearn_bundle(bundle, rows, subjects, fitted_until=2, roles={"popularity"})
    assert only["covisit"] == "not_learned" and only["popularity"] == "unlearned"
