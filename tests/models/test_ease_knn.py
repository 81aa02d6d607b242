"""EASE and item-kNN against hand-computed values (SYNTHETIC data)."""

from __future__ import annotations

import numpy as np
import pytest

from shopcast.errors import ModelError
from shopcast.models import EASE, Context, Interactions, ItemKNN, Vocabulary

from .synthetic import T0, ev, interactions

#: Users x items A, B, C: u1 {A, B}, u2 {B, C}, u3 {A, B, C}.
X = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])


def three_by_three() -> Interactions:
    rows = [
        ev(u, "ABC"[i], ts=T0 + 10 * r + i)
        for r, u in enumerate(["u1", "u2", "u3"])
        for i in np.flatnonzero(X[r])
    ]
    return interactions(rows, Vocabulary(), Vocabulary(["A", "B", "C"]))


def test_ease_matches_the_closed_form() -> None:
    reg = 1.0
    model = EASE(reg=reg).fit(three_by_three())
    p = np.linalg.inv(X.T @ X + reg * np.eye(3))
    b = np.eye(3) - p / np.diag(p)
    np.testing.assert_allclose(model.B_, b, atol=1e-6)
    assert np.diag(model.B_).tolist() == [0.0, 0.0, 0.0]
    # u1's fitted row plus a recent C.
    ctx = Context(now=T0, user_id="u1", recent_items=np.array([2]))
    np.testing.assert_allclose(model.score(ctx, np.arange(3)), np.ones(3) @ b, atol=1e-6)


def test_ease_refuses_large_catalogs_and_points_to_itemknn() -> None:
    with pytest.raises(ModelError, match="itemknn"):
        EASE(max_items=2).fit(three_by_three())


def test_itemknn_shrunk_cosine_and_top_k() -> None:
    shrink = 1.0
    model = ItemKNN(k=1, shrink=shrink).fit(three_by_three())
    norms = np.sqrt((X * X).sum(axis=0))
    sim = X.T @ X / (np.outer(norms, norms) + shrink)
    np.fill_diagonal(sim, 0.0)
    dense = model.S_.toarray()
    # A's and C's best neighbour is B; B's is A (tie with C: lower index wins).
    expected = np.zeros((3, 3))
    for i, j in [(0, 1), (1, 0), (2, 1)]:
        expected[i, j] = sim[i, j]
    np.testing.assert_allclose(dense, expected, rtol=1e-6)
    ctx = Context(now=T0, session_id="new", recent_items=np.array([0, 2]))
    np.testing.assert_allclose(
        model.score(ctx, np.arange(3)), [0.0, sim[0, 1] + sim[2, 1], 0.0], rtol=1e-6
    )
