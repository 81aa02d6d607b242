"""Shared helpers of the factor models (SYNTHETIC data)."""

from __future__ import annotations

import numpy as np
import pytest

from shopcast.errors import ModelError
from shopcast.models import Context, Vocabulary, _data
from shopcast.models._data import SubjectIndex, explicit_ratings, ridge_by_group

from .synthetic import T0, ev, interactions


@pytest.mark.parametrize("chunk", [1, 1 << 23])
def test_ridge_by_group_matches_one_solve_per_group(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_data, "_CHUNK_FLOATS", chunk)  # 1: one group per chunk
    rng = np.random.default_rng(0)
    group = np.array([3, 0, 3, 1, 0, 3, 1])  # group 2 has no entries
    feats = rng.normal(size=(7, 3))
    w, rhs = rng.random(7), rng.normal(size=7)
    reg = np.array([0.5, 1.0, 2.0])
    gram0 = np.diag([1.0, 2.0, 3.0])
    got = ridge_by_group(group, 4, feats, w, rhs, reg, gram0)
    for g in range(4):
        m = group == g
        a = gram0 + (feats[m] * w[m, None]).T @ feats[m] + np.diag(reg)
        np.testing.assert_allclose(got[g], np.linalg.solve(a, feats[m].T @ rhs[m]))
    assert got[2].tolist() == [0.0, 0.0, 0.0]


def test_explicit_ratings_keeps_the_latest_rating_of_a_pair() -> None:
    data = interactions(
        [
            ev("u1", "A", "rate", ts=T0, value=2.0),
            ev("u1", "A", "view", ts=T0 + 1),
            ev("u1", "B", "rate", ts=T0 + 2, value=4.0),
            ev("u1", "A", "rate", ts=T0 + 3, value=5.0),
        ]
    )
    user, item, r = explicit_ratings(data)
    assert sorted(zip(item.tolist(), r.tolist(), strict=True)) == [(0, 5.0), (1, 4.0)]
    assert user.tolist() == [0, 0]
    with pytest.raises(ModelError, match="no explicit ratings"):
        explicit_ratings(interactions([ev("u1", "A")]))


def test_subject_index_tries_the_user_then_the_session() -> None:
    subjects = SubjectIndex(Vocabulary(["u:ann", "s:x1"]).ids)
    assert subjects.of(Context(now=T0, user_id="ann", session_id="x1")) == 0
    assert subjects.of(Context(now=T0, user_id="bob", session_id="x1")) == 1
    assert subjects.of(Context(now=T0)) == -1
