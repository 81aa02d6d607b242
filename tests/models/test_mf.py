"""Biased MF (SGD, ALS), SVD++ and implicit ALS against their equations (SYNTHETIC data)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from shopcast.errors import ConfigError
from shopcast.models import (
    BayesianMF,
    BiasedMF,
    BiasedMFALS,
    Blend,
    Context,
    ImplicitALS,
    Interactions,
    SVDpp,
)

from .synthetic import T0, ev, interactions


def ratings(n_users: int = 30, n_items: int = 20, seed: int = 0) -> Interactions:
    """Low-rank 1-5 star ratings of about half the pairs."""
    rng = np.random.default_rng(seed)
    truth = 3 + rng.normal(size=(n_users, 2)) @ rng.normal(size=(2, n_items))
    rows = [
        ev(
            f"u{u}",
            f"i{i}",
            "rate",
            ts=T0 + u * n_items + i,
            value=float(np.clip(truth[u, i], 1, 5)),
        )
        for u in range(n_users)
        for i in range(n_items)
        if rng.random() < 0.5
    ]
    return interactions(rows)


def columns(data: Interactions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return data.user, data.item, data.value


def test_als_epoch_solves_the_normal_equations() -> None:
    data = ratings()
    model = BiasedMFALS(n_factors=3, epochs=1, reg_bias=2.0, reg_factors=3.0).fit(data)
    user, item, r = columns(data)
    reg = np.diag([2.0, 3.0, 3.0, 3.0])
    # The user step saw the initial item factors (drawn after the user factors) and b_i = 0.
    rng = np.random.default_rng(0)
    rng.normal(0.0, 0.05, (model.P_.shape[0], 3))
    q0 = rng.normal(0.0, 0.05, (model.Q_.shape[0], 3))
    for u in range(model.P_.shape[0]):
        m = user == u
        f = np.hstack([np.ones((m.sum(), 1)), q0[item[m]]])
        x = np.linalg.solve(f.T @ f + reg, f.T @ (r[m] - model.mu_))
        np.testing.assert_allclose([model.bu_[u], *model.P_[u]], x, atol=1e-10)
    for i in range(model.Q_.shape[0]):
        m = item == i
        f = np.hstack([np.ones((m.sum(), 1)), model.P_[user[m]]])
        x = np.linalg.solve(f.T @ f + reg, f.T @ (r[m] - model.mu_ - model.bu_[user[m]]))
        np.testing.assert_allclose([model.bi_[i], *model.Q_[i]], x, atol=1e-10)


@pytest.mark.parametrize("cls", [BiasedMF, SVDpp])
def test_sgd_decreases_the_training_loss(cls: type[BiasedMF]) -> None:
    data = ratings()
    losses: list[float] = []
    cls(n_factors=4, epochs=15, progress=lambda e, n, loss: losses.append(loss)).fit(data)
    assert len(losses) == 15
    assert losses[-1] < losses[0] < float(np.std(data.value))
    assert all(b <= a + 1e-3 for a, b in itertools.pairwise(losses))


@pytest.mark.parametrize("cls", [BiasedMFALS, BiasedMF, SVDpp])
def test_fold_in_equals_the_als_user_solve(cls: type[BiasedMF]) -> None:
    data = ratings()
    model = cls(n_factors=3, epochs=5).fit(data)
    items, r = np.array([0, 3, 5, 7]), np.array([5.0, 4.0, 1.0, 3.0])
    bias, vector = model.fold_in(items, r)
    f = np.hstack([np.ones((4, 1)), model.Q_[items]])
    reg = np.diag([model.reg_bias, *[model.reg_factors] * 3])
    target = r - model.mu_ - model.bi_[items]
    if isinstance(model, SVDpp):
        implicit = model.Y_[items].sum(axis=0) / 2.0
        x = np.linalg.solve(f.T @ f + reg, f.T @ (target - model.Q_[items] @ implicit))
        x[1:] += implicit
    else:
        x = np.linalg.solve(f.T @ f + reg, f.T @ target)
    np.testing.assert_allclose([bias, *vector], x, atol=1e-10)


def test_unknown_users_and_items_fall_back_to_the_biases() -> None:
    data = ratings()
    model = BiasedMF(n_factors=3, epochs=3).fit(data)
    got = model.predict(np.array([-1, 0, -1]), np.array([2, -1, 99]))
    expected = [model.mu_ + model.bi_[2], model.mu_ + model.bu_[0], model.mu_]
    np.testing.assert_allclose(got, np.clip(expected, 1, 5))
    # An unknown shopper is ranked by the item biases.
    scores = model.score(Context(now=T0), np.arange(3))
    np.testing.assert_allclose(scores, model.mu_ + model.bi_[:3])


def test_svdpp_profiles_an_unknown_shopper_from_the_session() -> None:
    model = SVDpp(n_factors=3, epochs=3).fit(ratings())
    cold = model.score(Context(now=T0), np.arange(5))
    session = model.score(
        Context(now=T0, session_id="x", recent_items=np.array([1, 2])), np.arange(5)
    )
    implicit = model.Y_[[1, 2]].sum(axis=0) / np.sqrt(2)
    np.testing.assert_allclose(session - cold, model.Q_[:5] @ implicit)


def implicit_shop() -> Interactions:
    """u0 bought A and viewed B; the others view pairs of A-D (SYNTHETIC)."""
    rows = [ev("u0", "A", "purchase", ts=T0), ev("u0", "B", ts=T0 + 1)]
    pairs = ["AB", "BC", "CD", "AC", "BD", "AD", "AB", "CD"]
    rows += [
        ev(f"v{k}", x, ts=T0 + 10 * k + j) for k, p in enumerate(pairs) for j, x in enumerate(p)
    ]
    return interactions(rows)


def test_ials_fold_in_solves_the_confidence_weighted_equations() -> None:
    data = implicit_shop()
    model = ImplicitALS(n_factors=3, reg=0.5, alpha=2.0, iterations=4).fit(data)
    q = model.Q_
    # u0's fitted row (A purchase: w=5, B view: w=1) plus a recent view of C.
    ctx = Context(now=T0, user_id="u0", recent_items=np.array([2]))
    w = np.array([5.0, 1.0, 1.0, 0.0])
    c = 1.0 + 2.0 * w
    a = q.T @ q + (q.T * (c - 1.0)) @ q + 0.5 * np.eye(3)
    x = np.linalg.solve(a, q.T @ (c * (w > 0)))
    np.testing.assert_allclose(model.score(ctx, np.arange(4)), q @ x, atol=1e-10)


def test_ials_confidence_pulls_heavy_items_towards_one() -> None:
    data = implicit_shop()
    weak = ImplicitALS(n_factors=3, reg=0.5, alpha=0.0, iterations=10).fit(data)
    strong = ImplicitALS(n_factors=3, reg=0.5, alpha=20.0, iterations=10).fit(data)
    u0 = Context(now=T0, user_id="u0")
    a_weak, b_weak = weak.score(u0, np.array([0, 1]))
    a_strong, b_strong = strong.score(u0, np.array([0, 1]))
    # With alpha = 0 the purchase counts like the view; with confidence it is fitted closer to 1.
    assert abs(1 - a_strong) < abs(1 - a_weak)
    assert a_strong - b_strong > a_weak - b_weak


def test_bayesian_mf_beats_the_mean_and_averages_its_draws() -> None:
    data = ratings()
    draws: list[float] = []
    model = BayesianMF(n_factors=2, burn_in=5, samples=8, progress=lambda e, n, x: draws.append(x))
    model.fit(data)
    assert len(draws) == 13
    # Eight draws of two factors side by side, each scaled by 8^-1/2.
    assert model.P_.shape[1] == model.Q_.shape[1] == 16
    user, item, r = columns(data)
    fitted = float(np.sqrt(np.mean((model.predict(user, item) - r) ** 2)))
    assert fitted < 0.5 * float(np.std(r))


def test_blend_weights_fit_the_holdout() -> None:
    data = ratings(n_users=60)
    small = {"n_factors": 2, "epochs": 5}
    blend = Blend(components=[("mf_als", small), ("mf", small)], holdout=0.3, reg=0.0).fit(data)
    assert blend.weights_.shape == (3,)
    user, item, _ = columns(data)
    parts = np.column_stack([m.predict(user, item) for m in blend.components_])
    np.testing.assert_allclose(
        blend.predict(user, item), np.clip(blend.weights_[0] + parts @ blend.weights_[1:], 1, 5)
    )
    with pytest.raises(ConfigError, match="does not predict ratings"):
        Blend(components=[("ease", {})])
