"""Popularity with hand-computed values on SYNTHETIC events."""

from __future__ import annotations

import numpy as np
import pytest

from shopcast.errors import ConfigError
from shopcast.models import Context, Popularity, Vocabulary

from .synthetic import DAY, T0, ev, interactions

CTX = Context(now=T0)


def test_decayed_score_is_exact() -> None:
    data = interactions(
        [
            ev("a", "x", "view", ts=T0 - 14 * DAY),  # one half-life old: 0.5
            ev("b", "x", "view", ts=T0),  # 1
            ev("a", "y", "purchase", ts=T0 - 28 * DAY),  # 5 * 0.25
            ev("a", "z", "impression", ts=T0),  # weighs 0
        ]
    )
    model = Popularity(half_life_days=14).fit(data)
    assert model.t_ref_ == T0
    idx = data.items.indices(["x", "y", "z"])
    np.testing.assert_allclose(model.score(CTX, idx), [1.5, 1.25, 0.0])


def test_learn_rescales_to_the_newest_event() -> None:
    items = Vocabulary()
    model = Popularity(half_life_days=14).fit(interactions([ev("a", "x", ts=T0)], items=items))
    model.learn(interactions([ev("a", "y", "add_to_cart", ts=T0 + 14 * DAY)], items=items))
    assert model.t_ref_ == T0 + 14 * DAY
    np.testing.assert_allclose(model.score(CTX, np.array([0, 1])), [0.5, 3.0])
    # A late event (older than t_ref_) is decayed, and does not move t_ref_.
    model.learn(interactions([ev("b", "x", ts=T0)], items=items))
    assert model.t_ref_ == T0 + 14 * DAY
    np.testing.assert_allclose(model.score(CTX, np.array([0])), [1.0])


def test_far_future_events_do_not_overflow() -> None:
    items = Vocabulary()
    model = Popularity(half_life_days=1).fit(interactions([ev("a", "x", ts=0.0)], items=items))
    model.learn(interactions([ev("a", "y", ts=T0)], items=items))
    assert model.score(CTX, np.array([0, 1])).tolist() == [0.0, 1.0]


def test_custom_event_weights_missing_types_weigh_zero() -> None:
    data = interactions([ev("a", "x", "view"), ev("a", "y", "purchase")])
    model = Popularity(event_weights={"purchase": 2.0}).fit(data)
    assert model.score(CTX, np.array([0, 1])).tolist() == [0.0, 2.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"half_life_days": 0.0},
        {"event_weights": {"teleport": 1.0}},
        {"event_weights": {"view": -1.0}},
    ],
)
def test_bad_hyperparameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Popularity(**kwargs)  # type: ignore[arg-type]


def test_top_orders_by_score_then_index() -> None:
    rows = [ev("a", "i0")] + [ev("a", "i1")] * 3 + [ev("a", "i2")] * 2 + [ev("a", "i3")] * 2
    data = interactions([*rows, ev("a", "i4", "impression")])
    model = Popularity().fit(data)
    assert model.top(10).tolist() == [1, 2, 3, 0]  # i4 has no popularity
    assert model.top(2).tolist() == [1, 2]
    assert model.top(2, mask=np.array([True, False, False, True])).tolist() == [3, 0]
    assert model.top(0).tolist() == []


def test_top_breaks_ties_at_the_cut_by_index() -> None:
    data = interactions([ev("a", f"i{i}") for i in range(6)] + [ev("a", "i5")])
    assert Popularity().fit(data).top(3).tolist() == [5, 0, 1]
