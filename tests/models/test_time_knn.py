"""Temporal neighbourhood (time_knn) and its blend on SYNTHETIC ratings with session moods."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopcast.domain import EventType
from shopcast.errors import ConfigError
from shopcast.evaluation.harness import RatingTask, evaluate_rating
from shopcast.models import (
    Baselines,
    Blend,
    Context,
    Interactions,
    TimeBlend,
    TimeKNN,
    Vocabulary,
)
from shopcast.models._base import EVENT_CODES, TimedRatingPredictor

from .test_glocalk import rmse

HOUR = 3600.0


def moody(
    n_users: int = 30, n_items: int = 40, seed: int = 0
) -> tuple[Interactions, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SYNTHETIC ratings: item quality plus a per-(user, session) mood of ±1 star.

    Each user rates in two sessions a day apart, every rating of a session within a
    minute. ``(train, held-out users, items, ratings, times)``, 20 % held out at random.
    """
    rng = np.random.default_rng(seed)
    quality = rng.normal(0, 0.5, n_items)
    users, items, times, values = [], [], [], []
    for u in range(n_users):
        rated = rng.choice(n_items, 20, replace=False)
        for session, chunk in enumerate((rated[:10], rated[10:])):
            mood = rng.choice([-1.0, 1.0])
            start = 1_000_000.0 + u * 10 * 86_400.0 + session * 86_400.0
            for k, i in enumerate(chunk):
                users.append(u)
                items.append(int(i))
                times.append(start + 5.0 * k)
                values.append(3.0 + quality[i] + mood + rng.normal(0, 0.2))
    u, i = np.array(users), np.array(items)
    t, r = np.array(times), np.clip(np.rint(values), 1, 5)
    held = rng.random(u.shape[0]) < 0.2
    order = np.argsort(t[~held], kind="stable")
    n = int((~held).sum())
    train = Interactions(
        users=Vocabulary([f"u:{k}" for k in range(n_users)]),
        items=Vocabulary([str(k) for k in range(n_items)]),
        user=u[~held][order].astype(np.int64),
        item=i[~held][order].astype(np.int64),
        type=np.full(n, EVENT_CODES[EventType.RATE], dtype=np.int64),
        ts=t[~held][order].astype(np.float64),
        value=r[~held][order].astype(np.float64),
    )
    return train, u[held], i[held], r[held], t[held]


def test_session_moods_are_learned_from_the_times() -> None:
    train, hu, hi, hr, ht = moody()
    model = TimeKNN(bandwidth=HOUR, shrinkage=1.0).fit(train)
    assert isinstance(model, TimedRatingPredictor)
    timed = rmse(model.predict_at(hu, hi, ht), hr)
    assert timed < 0.6 * rmse(model.predict(hu, hi), hr)
    assert timed < 0.5


def test_a_prediction_matches_a_hand_computation() -> None:
    train, hu, hi, _, ht = moody(seed=1)
    model = TimeKNN(bandwidth=100.0, shrinkage=2.0).fit(train)
    u, i, t = int(hu[0]), int(hi[0]), float(ht[0])
    mine = train.user == u
    resid = train.value[mine] - model.mu_ - model.user_bias_[u] - model.item_bias_[train.item[mine]]
    w = np.exp(-np.abs(train.ts[mine] - t) / 100.0)
    expected = model.mu_ + model.user_bias_[u] + model.item_bias_[i] + w @ resid / (w.sum() + 2)
    got = model.predict_at(hu[:1], hi[:1], ht[:1])[0]
    assert got == pytest.approx(np.clip(expected, 1, 5))
    assert model.time_offset(hu[:1], ht[:1])[0] != 0.0


def test_causal_uses_only_the_earlier_ratings() -> None:
    train, *_ = moody(seed=4)
    model = TimeKNN(bandwidth=HOUR, causal=True).fit(train)
    u = int(train.user[0])
    first = float(train.ts[train.user == u].min())
    later = float(train.ts[train.user == u].max()) + 1.0
    offsets = model.time_offset(np.array([u, u]), np.array([first, later]))
    assert offsets[0] == 0.0  # nothing before the user's first rating
    assert offsets[1] != 0.0
    both = TimeKNN(bandwidth=HOUR).fit(train).time_offset(np.array([u]), np.array([first]))
    assert both[0] != 0.0


def test_unknown_users_and_missing_times_get_the_baselines() -> None:
    train, *_ = moody()
    model = TimeKNN().fit(train)
    user = np.array([-1, 0, 0, 10_000])
    item = np.array([0, 1, -1, 2])
    ts = np.array([train.ts[0], np.nan, train.ts[0], train.ts[0]])
    got = model.predict_at(user, item, ts)
    np.testing.assert_allclose(got[:2], model.predict(user[:2], item[:2]))
    assert got[3] == pytest.approx(np.clip(model.mu_ + model.item_bias_[2], 1, 5))


def test_baselines_are_time_knn_without_the_kernel() -> None:
    train, hu, hi, *_ = moody(seed=7)
    base = Baselines().fit(train)
    assert not isinstance(base, TimedRatingPredictor)
    np.testing.assert_allclose(base.predict(hu, hi), TimeKNN().fit(train).predict(hu, hi))
    got = base.predict(np.array([-1]), np.array([3]))[0]
    assert got == pytest.approx(np.clip(base.mu_ + base.item_bias_[3], 1, 5))


def test_saved_model_predicts_the_same(tmp_path: Path) -> None:
    train, hu, hi, _, ht = moody(seed=2)
    model = TimeKNN(bandwidth=30.0, shrinkage=0.5).fit(train)
    model.save(tmp_path / "m")
    loaded = TimeKNN.load(tmp_path / "m", train.items)
    np.testing.assert_array_equal(loaded.predict_at(hu, hi, ht), model.predict_at(hu, hi, ht))
    assert (loaded.bandwidth, loaded.shrinkage) == (30.0, 0.5)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"bandwidth": 0}, "bandwidth"),
        ({"shrinkage": -1}, "shrinkage"),
        ({"n_epochs": 0}, "n_epochs"),
    ],
)
def test_bad_hyperparameters_name_the_field(params: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        TimeKNN(**params)


def test_blend_weighs_the_time_member_at_the_held_out_times() -> None:
    train, hu, hi, hr, ht = moody(seed=3)
    blend = Blend(
        components=[["mf_bayes", {"samples": 10}], ["time_knn", {"bandwidth": HOUR}]]
    ).fit(train)
    assert blend.weights_[2] > 0.5  # learned from time_knn's predictions at the times
    assert rmse(blend.predict_at(hu, hi, ht), hr) < 0.7 * rmse(blend.predict(hu, hi), hr)


def test_feature_weighted_blend_scores_as_it_predicts_and_survives_saving(
    tmp_path: Path,
) -> None:
    train, hu, hi, hr, ht = moody(seed=5)
    blend = Blend(
        components=[["knn_baseline", {"user_based": False}], ["time_knn", {"bandwidth": HOUR}]],
        feature_weighted=True,
    ).fit(train)
    assert blend.weights_.shape == (3 * 2 + 3,)
    assert np.all(blend.weights_[3:] != 0.0)  # the support terms are fitted
    assert rmse(blend.predict_at(hu, hi, ht), hr) < 0.5
    # score_all's row of a user is the unclipped blend of every item for that user
    u, now = int(hu[0]), float(ht[0])
    items = np.arange(len(train.items))
    row = blend.score_all([Context(now=now, user_id=str(u))])[0]
    expected = blend.predict_at(np.full(items.shape, u), items, np.full(items.shape, now))
    inside = (expected > blend.r_min_) & (expected < blend.r_max_)
    np.testing.assert_allclose(row[inside], expected[inside])
    blend.save(tmp_path / "b")
    loaded = Blend.load(tmp_path / "b", train.items)
    np.testing.assert_array_equal(loaded.predict_at(hu, hi, ht), blend.predict_at(hu, hi, ht))


def test_a_saved_time_blend_keeps_its_weighting(tmp_path: Path) -> None:
    train, hu, hi, _, ht = moody(seed=6)
    small = [["knn_baseline", {"user_based": True}], ["time_knn", {"bandwidth": HOUR}]]
    for weighted in (False, True):
        blend = TimeBlend(components=small, feature_weighted=weighted).fit(train)
        blend.save(tmp_path / str(weighted))
        loaded = TimeBlend.load(tmp_path / str(weighted), train.items)
        assert loaded.feature_weighted is weighted
        np.testing.assert_array_equal(loaded.predict_at(hu, hi, ht), blend.predict_at(hu, hi, ht))


class _Clock:
    """A rating model that answers 1 without times and 5 with them."""

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        return np.ones(user.shape[0])

    def predict_at(self, user: np.ndarray, item: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return np.full(user.shape[0], 5.0)


def test_harness_rates_at_the_times_when_the_task_has_them() -> None:
    train, hu, hi, _, ht = moody()
    truth = np.full(hu.shape[0], 5.0)
    timed = RatingTask(train, hu, hi, truth, ht)
    assert evaluate_rating(_Clock(), timed)["RMSE"] == 0.0
    untimed = RatingTask(train, hu, hi, truth)
    assert evaluate_rating(_Clock(), untimed)["RMSE"] == pytest.approx(4.0)


@pytest.mark.slow
@pytest.mark.dataset
def test_times_help_on_a_validation_split_of_real_u1_base(data_path: Path) -> None:
    """REAL MovieLens 100K: a seeded 10 % of u1.base (u1.test untouched)."""
    from shopcast.evaluation import splits as S
    from shopcast.evaluation.harness import rating_task

    folder = data_path / "movielens-100k"
    if not (folder / "u1.base").exists():
        pytest.skip("MovieLens 100K is not under SHOPCAST_DATA")
    fit, val = S.holdout(S.read_movielens_fold(folder, 1).train, 0.1, seed=0)
    task = rating_task(fit, val)
    assert task.ts is not None
    model = TimeKNN(bandwidth=300.0, shrinkage=1.0).fit(task.train)
    timed = evaluate_rating(model, task)["RMSE"]
    assert timed < evaluate_rating(Baselines().fit(task.train), task)["RMSE"] - 0.02
    assert timed < 0.92  # 0.9135 measured
