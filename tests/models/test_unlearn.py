"""``unlearn`` of Popularity and CoVisitation (erasure) on SYNTHETIC events: after it the
models equal models fitted without the erased events (up to float rounding)."""

from __future__ import annotations

import numpy as np
import pytest

from shopcast.models import CoVisitation, Interactions, Popularity, Vocabulary

from .synthetic import DAY, T0, ev, interactions

OTHERS = [
    ev("a", "x", ts=T0 - 3 * DAY),
    ev("a", "y", "add_to_cart", ts=T0 - 2 * DAY),
    ev("b", "y", ts=T0 - DAY),
    ev("b", "z", "purchase", ts=T0),
    ev("c", "x", ts=T0 - 5 * DAY),
    ev("c", "z", ts=T0 - 4 * DAY),
]
#: The erased user: also the only one who ever saw item "only".
ERASED = [
    ev("e", "x", ts=T0 - 10 * DAY),
    ev("e", "only", "purchase", ts=T0 - 9 * DAY),
    ev("e", "y", ts=T0 - 8 * DAY),
    ev("e", "only", "impression", ts=T0 - 8 * DAY),
]


def _split(items: Vocabulary, users: Vocabulary) -> tuple[Interactions, Interactions]:
    everything = interactions(OTHERS + ERASED, users=users, items=items)
    erased = interactions(ERASED, users=users, items=items)
    return everything, erased


def test_popularity_unlearn_equals_a_fit_without_the_user() -> None:
    items, users = Vocabulary(), Vocabulary()
    everything, erased = _split(items, users)
    model = Popularity(half_life_days=7).fit(everything)
    model.unlearn(erased)
    without = Popularity(half_life_days=7).fit(interactions(OTHERS, users=users, items=items))
    np.testing.assert_allclose(model.scores_, without.scores_, rtol=1e-12, atol=1e-15)
    only = items.index("only")
    assert model.scores_[only] == 0.0
    assert only not in model.top(10).tolist()
    assert (model.scores_ >= 0).all()


def test_popularity_unlearn_after_online_learning_and_rescaling() -> None:
    items, users = Vocabulary(), Vocabulary()
    model = Popularity(half_life_days=7).fit(interactions(OTHERS, users=users, items=items))
    online = interactions(ERASED, users=users, items=items)
    model.learn(online)
    model.learn(interactions([ev("a", "x", ts=T0 + 20 * DAY)], users=users, items=items))
    model.unlearn(online)
    expected = Popularity(half_life_days=7).fit(
        interactions([*OTHERS, ev("a", "x", ts=T0 + 20 * DAY)], users=users, items=items)
    )
    np.testing.assert_allclose(model.scores_, expected.scores_, rtol=1e-9, atol=1e-12)
    assert model.scores_[items.index("only")] == 0.0


def _dense(model: CoVisitation) -> np.ndarray:
    model._merge()
    n = model.n_items_
    m = model.matrix_
    out = np.zeros((n, n))
    out[: m.shape[0], : m.shape[1]] = m.toarray()
    return out


@pytest.mark.parametrize("window", [1, 2, 5])
def test_covisit_unlearn_equals_a_fit_without_the_user(window: int) -> None:
    items, users = Vocabulary(), Vocabulary()
    everything, erased = _split(items, users)
    model = CoVisitation(window=window, half_life_days=30).fit(everything)
    only = items.index("only")
    assert model.neighbors(items.index("x"), 10)[0].tolist().count(only) == 1
    model.unlearn(erased)
    without = CoVisitation(window=window, half_life_days=30).fit(
        interactions(OTHERS, users=users, items=items)
    )
    np.testing.assert_allclose(_dense(model), _dense(without), rtol=1e-6, atol=1e-9)
    for item in ("x", "y", "z"):
        assert only not in model.neighbors(items.index(item), 10)[0].tolist()
    assert model.neighbors(only, 10)[0].size == 0
    assert (model.matrix_.data > 0).all()


def test_covisit_unlearn_of_online_events_and_rings() -> None:
    items, users = Vocabulary(), Vocabulary()
    model = CoVisitation(window=3, half_life_days=30).fit(
        interactions(OTHERS, users=users, items=items)
    )
    online = interactions(ERASED, users=users, items=items)
    model.learn(online)
    subject = users.index("u:e")
    assert subject in model.recent_
    model.unlearn(online)
    assert subject not in model.recent_  # the live ring is forgotten too
    without = CoVisitation(window=3, half_life_days=30).fit(
        interactions(OTHERS, users=users, items=items)
    )
    np.testing.assert_allclose(_dense(model), _dense(without), rtol=1e-6, atol=1e-9)
    # A later event of the same id pairs with nothing from before the erasure.
    model.learn(interactions([ev("e", "z", ts=T0 + DAY)], users=users, items=items))
    assert model.neighbors(items.index("z"), 10)[0].tolist() == _dense_neighbours(
        without, "z", items
    )


def _dense_neighbours(model: CoVisitation, item: str, items: Vocabulary) -> list[int]:
    return list(model.neighbors(items.index(item), 10)[0].tolist())


def test_unlearn_never_goes_below_zero() -> None:
    items, users = Vocabulary(), Vocabulary()
    data = interactions(OTHERS, users=users, items=items)
    pop = Popularity().fit(data)
    pop.unlearn(data)
    pop.unlearn(data)  # twice: nothing left to take
    assert (pop.scores_ == 0).all()
    co = CoVisitation().fit(data)
    co.unlearn(data)
    co.unlearn(data)
    assert co.matrix_.nnz == 0
