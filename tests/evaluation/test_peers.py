"""Peer adapters on tiny SYNTHETIC data (skipped when the library is not installed)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from shopcast.evaluation import harness as H
from shopcast.evaluation import splits as S
from shopcast.evaluation.peers import PEERS, ImplicitPeer, LightFMPeer, SurprisePeer, unavailable
from shopcast.models._base import BatchScorer, Context, RatingPredictor


def clusters() -> pl.DataFrame:
    """Two groups of 12 users, each buying 4 of its group's 5 items."""
    rows = []
    for u in range(24):
        g = u // 12
        for j in range(5):
            if j != u % 5:
                rows.append((f"u{u}", f"g{g}i{j}", float(u * 10 + j)))
    return S.event_frame(pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row"))


def held_out() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(24)],
            "item_id": [f"g{u // 12}i{u % 5}" for u in range(24)],
        }
    )


def test_registry_and_availability() -> None:
    assert {
        "surprise-svd",
        "surprise-svdpp",
        "implicit-als",
        "implicit-bpr",
        "lightfm",
        "ease",
    } <= set(PEERS)
    assert unavailable("ease") is None  # Shopcast's own EASE is registered
    for name, spec in PEERS.items():
        assert spec.task in ("rating", "ranking"), name


@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_implicit_peer_finds_the_missing_group_item(algorithm: str) -> None:
    pytest.importorskip("implicit")
    task = H.ranking_task(clusters(), held_out())
    model = ImplicitPeer(algorithm, factors=8, iterations=30 if algorithm == "als" else 200)
    model.fit(task.train)
    assert isinstance(model, BatchScorer)
    scores = model.score_all(task.contexts)
    assert scores.shape == (24, task.n_items)
    out = H.evaluate_ranking(model, task, (1, 5))
    assert out["HR@5"] >= 0.9  # the only unseen item of the user's group
    assert np.all(model.score_all([Context(now=0.0, user_id="stranger")]) == 0)
    assert model.score(task.contexts[0], np.array([0, 99])).shape == (2,)


def test_lightfm_peer_features_and_ranking() -> None:
    pytest.importorskip("lightfm")
    task = H.ranking_task(clusters(), held_out())
    tokens = {f"g{g}i{j}": [f"group{g}"] for g in range(2) for j in range(5)}
    model = LightFMPeer(tokens, no_components=8, epochs=20)
    feats = model.item_features(task.train)
    assert feats.shape == (task.n_items, task.n_items + 2)
    np.testing.assert_allclose(np.asarray(feats.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    model.fit(task.train)
    assert H.evaluate_ranking(model, task, (5,))["HR@5"] >= 0.9


@pytest.mark.parametrize("algorithm", ["svd", "svdpp"])
def test_surprise_peer_predicts_ratings(algorithm: str) -> None:
    pytest.importorskip("surprise")
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"i{i}", float(5 if (u + i) % 2 else 1), float(u * 20 + i))
        for u in range(20)
        for i in range(15)
        if rng.random() < 0.8
    ]
    df = S.event_frame(
        pl.DataFrame(rows, schema=["user_id", "item_id", "value", "ts"], orient="row"),
        default_type="rate",
    )
    train, test = S.holdout(df, 0.2, seed=0)
    task = H.rating_task(train, test)
    model = SurprisePeer(algorithm, n_epochs=60, lr_all=0.01)
    model.fit(task.train)
    assert isinstance(model, RatingPredictor)
    out = H.evaluate_rating(model, task)
    assert out["RMSE"] < 1.8  # the global mean alone is at 2.0
    unknown = model.predict(np.array([-1]), np.array([-1]))
    assert 1.0 <= unknown[0] <= 5.0
