"""Noise on released aggregates, checked statistically on SYNTHETIC simulations (seeded)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from shopcast.api import create_app
from shopcast.config import Settings
from shopcast.errors import ConfigError
from shopcast.privacy.noise import Mechanism, item_user_counts

TRUE = np.array([0, 3, 10, 100, 1000], dtype=np.float64)
RUNS = 20_000


@pytest.mark.parametrize(
    ("epsilon", "delta", "l1", "l2"),
    [(1.0, 0.0, 1.0, 1.0), (0.5, 0.0, 4.0, 2.0), (1.0, 1e-5, 1.0, 1.0), (0.8, 1e-6, 9.0, 3.0)],
)
def test_mean_error_matches_the_mechanism_scale(
    epsilon: float, delta: float, l1: float, l2: float
) -> None:
    mech = Mechanism(epsilon, delta)
    rng = np.random.default_rng(7)
    noisy = np.stack([mech.noisy(TRUE, l1, l2, rng) for _ in range(RUNS)])
    err = noisy - TRUE
    scale = mech.scale(l1, l2)
    if delta == 0:
        assert scale == pytest.approx(l1 / epsilon)
    else:
        assert scale == pytest.approx(l2 * math.sqrt(2 * math.log(1.25 / delta)) / epsilon)
    # unbiased: the mean error is within 4 standard errors of 0
    sd = scale * (math.sqrt(2) if delta == 0 else 1.0)
    assert np.abs(err.mean(axis=0)).max() < 4 * sd / math.sqrt(RUNS)
    # mean absolute error: b (Laplace) or σ·√(2/π) (Gaussian), within 3 %
    mae = np.abs(err).mean(axis=0)
    np.testing.assert_allclose(mae, mech.expected_abs_error(l1, l2), rtol=0.03)


def test_release_rounds_clips_and_more_privacy_means_more_noise() -> None:
    rng = np.random.default_rng(1)
    out = Mechanism(0.1).release(np.zeros(1000), rng=rng)
    assert out.dtype == np.int64 and out.min() == 0 and out.max() > 0
    errors = []
    for eps in (0.1, 1.0, 10.0):
        rel = Mechanism(eps).release(np.full(5000, 50.0), rng=np.random.default_rng(2))
        errors.append(np.abs(rel - 50).mean())
    assert errors[0] > errors[1] > errors[2]
    for bad in ((0.0, 0.0), (1.0, 1.0), (-1.0, 0.0)):
        with pytest.raises(ConfigError):
            Mechanism(*bad)


def test_item_user_counts_bound_each_users_contribution() -> None:
    frame = pl.DataFrame(
        {
            "user_id": ["a"] * 5 + ["b", "b", None, "c"],
            "item_id": ["i1", "i2", "i3", "i4", "i1", "i1", "i1", "i1", "i2"],
            "type": ["view"] * 8 + ["impression"],
            "ts": [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0],
        }
    )
    counts = item_user_counts(frame, since=0.0, max_items_per_user=2)
    # a's two most recent items are i1 (ts 14) and i4; b counts once for i1
    assert dict(counts.iter_rows()) == {"i1": 2, "i4": 1}
    assert dict(item_user_counts(frame, since=15.0, max_items_per_user=2).iter_rows()) == {"i1": 1}


def test_stats_endpoint_adds_noise_only_when_configured(settings: Settings) -> None:
    events = [{"type": "view", "user_id": f"u{u}", "item_id": f"i{u % 3}"} for u in range(60)]
    exact = []
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/events", json=events).status_code == 202
        body = c.get("/v1/privacy/stats?k=3").json()
        assert body["mechanism"] == "none" and body["noise_scale"] == {}
        exact = [(x["key"], x["count"]) for x in body["items"]]
    assert exact == [("i0", 20), ("i1", 20), ("i2", 20)]
    noisy = settings.model_copy(update={"privacy": settings.privacy.model_copy(
        update={"dp_epsilon": 0.5, "dp_delta": 0.0})})  # fmt: skip
    with TestClient(create_app(noisy)) as c:
        body = c.get("/v1/privacy/stats?k=3&max_items_per_user=1").json()
        assert body["mechanism"] == "laplace" and body["epsilon"] == 0.5
        assert body["noise_scale"]["items"] == pytest.approx(2.0)
        counts = [x["count"] for x in body["items"]]
        assert len(counts) == 3 and all(c >= 0 for c in counts)
