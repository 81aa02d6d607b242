"""The contract every model in ``MODELS`` meets, on SYNTHETIC events.

A model registered in ``shopcast.models.MODELS`` gets these tests without any change here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopcast.errors import ModelError, NotFittedError
from shopcast.models import (
    MODELS,
    Context,
    Interactions,
    OnlineLearner,
    Recommender,
    Vocabulary,
    model_class,
)
from shopcast.models._base import BatchScorer, RatingPredictor

from .synthetic import DAY, T0, ev, interactions

NAMES = sorted(MODELS)
ITEMS = ["A", "B", "C", "D", "E", "F"]


def shop(ratings: bool = False) -> Interactions:
    """Four shoppers (one anonymous) over items A-F; A and E are never seen together.

    With ``ratings`` (for rating models) each shopper also rates what it saw, 1-5 stars.
    """
    rows = [
        ev("u1", "A", ts=T0 - 3 * DAY),
        ev("u1", "B", ts=T0 - 3 * DAY + 60),
        ev("u1", "C", "add_to_cart", ts=T0 - 3 * DAY + 120),
        ev("u1", "C", "purchase", ts=T0 - 2 * DAY),
        ev("u2", "A", ts=T0 - DAY),
        ev("u2", "B", "add_to_cart", ts=T0 - DAY + 60),
        ev(None, "B", ts=T0 - DAY + 30, session="s9"),
        ev(None, "C", ts=T0 - DAY + 90, session="s9"),
        ev(None, "F", ts=T0 - DAY + 150, session="s9"),
        ev(None, "D", "impression", ts=T0 - DAY + 160, session="s9"),
        ev("u3", "D", ts=T0 - 5 * DAY),
        ev("u3", "E", ts=T0 - 5 * DAY + 60),
        ev("u3", "F", "favorite", ts=T0),
    ]
    if ratings:
        stars = [("u1", "A", 5), ("u1", "B", 4), ("u1", "C", 5), ("u2", "A", 2), ("u2", "B", 3)]
        stars += [("u3", "D", 4), ("u3", "E", 1), ("u3", "F", 3)]
        rows += [ev(u, i, "rate", ts=T0 + k, value=float(v)) for k, (u, i, v) in enumerate(stars)]
        rows += [ev(None, "B", "rate", ts=T0 + 9, session="s9", value=4.0)]
    return interactions(rows, Vocabulary(), Vocabulary(ITEMS))


def data_for(model: Recommender) -> Interactions:
    """The shop a model is fitted on: with ratings for rating predictors."""
    return shop(ratings=isinstance(model, RatingPredictor))


CONTEXTS = [
    Context(now=T0),
    Context(now=T0, user_id="u1", recent_items=np.array([0])),
    Context(now=T0, session_id="s9", recent_items=np.array([3, 1, 0])),
]
ALL = np.arange(len(ITEMS))


def scores(model: Recommender, candidates: np.ndarray = ALL) -> list[np.ndarray]:
    return [model.score(c, candidates) for c in CONTEXTS]


@pytest.fixture(params=NAMES)
def model(request: pytest.FixtureRequest) -> Recommender:
    return model_class(request.param)()


def test_registry_names_match_and_unknown_names_are_listed() -> None:
    assert all(cls.name == name for name, cls in MODELS.items())
    with pytest.raises(ModelError, match="known models: " + ", ".join(NAMES)):
        model_class("nope")


def test_fit_returns_self_and_model_is_a_recommender(model: Recommender) -> None:
    assert isinstance(model, Recommender)
    assert model.fit(data_for(model)) is model


def test_use_before_fit_raises(model: Recommender, tmp_path: Path) -> None:
    with pytest.raises(NotFittedError):
        model.score(CONTEXTS[1], ALL)
    with pytest.raises(NotFittedError):
        model.save(tmp_path)
    if isinstance(model, OnlineLearner):
        with pytest.raises(NotFittedError):
            model.learn(data_for(model))


def test_score_shape_dtype_and_unknown_items(model: Recommender) -> None:
    model.fit(data_for(model))
    candidates = np.array([2, -1, 0, len(ITEMS), 10**9, 2])
    for context in CONTEXTS:
        s = model.score(context, candidates)
        assert s.dtype == np.float64 and s.shape == candidates.shape
        assert np.all(np.isfinite(s))
        assert s[[1, 3, 4]].tolist() == [0.0, 0.0, 0.0]
        assert s[0] == s[5]
        assert model.score(context, np.empty(0, np.int64)).shape == (0,)
    assert any(s.max() > 0 for s in scores(model))


def test_save_load_round_trip(model: Recommender, tmp_path: Path) -> None:
    data = data_for(model)
    model.fit(data)
    model.save(tmp_path / "m")
    loaded = type(model).load(tmp_path / "m", data.items)
    for a, b in zip(scores(model), scores(loaded), strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_refuses_other_models_and_other_vocabularies(
    model: Recommender, tmp_path: Path
) -> None:
    data = data_for(model)
    model.fit(data).save(tmp_path / "m")
    with pytest.raises(ModelError, match="vocabulary"):
        type(model).load(tmp_path / "m", Vocabulary(ITEMS[:2]))
    with pytest.raises(ModelError):
        type(model).load(tmp_path / "missing", data.items)
    meta = tmp_path / "m" / "meta.json"
    meta.write_text(meta.read_text().replace('"params": {', '"params": {"bogus": 1, '))
    with pytest.raises(ModelError, match="bad metadata"):
        type(model).load(tmp_path / "m", data.items)
    for other in MODELS.values():
        if other is not type(model):
            with pytest.raises(ModelError, match=model.name):
                other.load(tmp_path / "m", data.items)


def test_fit_is_deterministic(model: Recommender) -> None:
    first = scores(model.fit(data_for(model)))
    again = scores(model.fit(data_for(model)))
    fresh = scores(type(model)().fit(data_for(model)))
    for a, b, c in zip(first, again, fresh, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def online_events(data: Interactions) -> Interactions:
    """u4 goes back and forth between A and E, then finds G, a brand new item."""
    rows = [ev("u4", item, ts=T0 + i) for i, item in enumerate("AEAEAG")]
    return interactions(rows, data.users, data.items)


def test_learn_raises_the_learned_items(model: Recommender, tmp_path: Path) -> None:
    if not isinstance(model, OnlineLearner):
        pytest.skip(f"{model.name} does not learn online")
    data = data_for(model)
    model.fit(data)
    model.save(tmp_path / "m")
    e, g = 4, len(ITEMS)
    context = CONTEXTS[1]  # recent: A
    before = model.score(context, np.array([e, g]))
    model.learn(online_events(data))
    assert data.items.id(g) == "G"
    after = model.score(context, np.array([e, g]))
    assert after[0] > before[0]
    assert before[1] == 0 and after[1] > 0
    # A loaded model learns the same.
    loaded = type(model).load(tmp_path / "m", data.items)
    assert isinstance(loaded, OnlineLearner)
    loaded.learn(online_events(data))
    np.testing.assert_allclose(loaded.score(context, ALL), model.score(context, ALL))


def test_score_all_matches_score(model: Recommender) -> None:
    if not isinstance(model, BatchScorer):
        pytest.skip(f"{model.name} has no score_all")
    model.fit(data_for(model))
    batch = model.score_all(CONTEXTS)
    assert batch.dtype == np.float64 and batch.shape == (len(CONTEXTS), len(ITEMS))
    for row, single in zip(batch, scores(model), strict=True):
        np.testing.assert_allclose(row, single, rtol=1e-6, atol=1e-9)
    assert model.score_all([]).shape[0] == 0


def test_predict_ratings(model: Recommender, tmp_path: Path) -> None:
    if not isinstance(model, RatingPredictor):
        pytest.skip(f"{model.name} does not predict ratings")
    data = data_for(model)
    model.fit(data)
    user = np.array([data.users.index("u:u1"), -1, data.users.index("u:u3"), 10**6])
    item = np.array([0, 1, -1, len(ITEMS)])
    r = model.predict(user, item)
    assert r.dtype == np.float64 and r.shape == (4,)
    assert np.all((r >= 1) & (r <= 5))
    model.save(tmp_path / "m")
    loaded = type(model).load(tmp_path / "m", data.items)
    assert isinstance(loaded, RatingPredictor)
    np.testing.assert_array_equal(loaded.predict(user, item), r)
