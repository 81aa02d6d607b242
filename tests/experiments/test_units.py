"""Assignment, statistics and exploration (SYNTHETIC inputs)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from shopcast.domain import Recommendation, RecommendedItem
from shopcast.experiments.exploration import Explorer, Pool
from shopcast.experiments.model import Experiment, unit_hash
from shopcast.experiments.stats import compare, ratio, sample_ratio_mismatch


def _experiment(**kw: object) -> Experiment:
    spec: dict[str, object] = {
        "experiment_id": "exp-1",
        "variants": [{"name": "A", "share": 1}, {"name": "B", "share": 3}],
    }
    return Experiment.model_validate({**spec, **kw})


def test_assignment_is_deterministic_and_follows_shares() -> None:
    e = _experiment()
    users = [f"user-{i}" for i in range(8000)]
    first = [e.assign(u, None) for u in users]
    assert first == [e.assign(u, "any-session") for u in users]  # user id wins, stable
    counts = Counter(v.name for v in first if v is not None)
    assert counts["B"] / len(users) == pytest.approx(0.75, abs=0.02)
    other = _experiment(salt="another")
    moved = sum(a != b for a, b in zip(first, [other.assign(u, None) for u in users], strict=True))
    assert moved > 0.3 * len(users)  # another salt, an independent split


def test_traffic_share_and_sessions() -> None:
    e = _experiment(traffic=0.2)
    inside = [e.assign(f"u{i}", None) for i in range(5000)]
    assert sum(v is not None for v in inside) / 5000 == pytest.approx(0.2, abs=0.02)
    assert e.assign(None, None) is None
    assert e.assign(None, "sess") == e.assign(None, "sess")
    assert 0 <= unit_hash("s", "p", "k") < 1


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="distinct"):
        _experiment(variants=[{"name": "A", "share": 1}, {"name": "A", "share": 1}])
    with pytest.raises(ValueError, match="experiment_id"):
        _experiment(experiment_id="Bad Id")
    with pytest.raises(ValueError, match="scene"):
        _experiment(scenes=["nowhere"])
    with pytest.raises(ValueError):
        _experiment(variants=[{"name": "A", "share": 1}])  # at least two


def test_delta_method_matches_the_binomial_with_one_impression_per_user() -> None:
    rng = np.random.default_rng(0)
    clicks = (rng.random(20_000) < 0.1).astype(float)
    est = ratio(clicks, np.ones_like(clicks))
    p = clicks.mean()
    assert est.value == pytest.approx(p)
    assert est.variance == pytest.approx(p * (1 - p) / clicks.size, rel=0.01)


def test_clustered_users_widen_the_interval() -> None:
    rng = np.random.default_rng(1)
    # users with their own click propensity: impressions of a user are correlated
    n, per = 500, 20
    p_user = rng.beta(1, 9, n)
    clicks = rng.binomial(per, p_user).astype(float)
    est = ratio(clicks, np.full(n, float(per)))
    naive = est.value * (1 - est.value) / (n * per)  # type: ignore[operator]
    assert est.variance is not None and est.variance > 1.5 * naive


def test_compare_and_false_positive_rate() -> None:
    rng = np.random.default_rng(2)
    significant = 0
    for _ in range(200):  # A/A tests: about alpha of them significant
        a = (rng.random(2000) < 0.1).astype(float)
        b = (rng.random(2000) < 0.1).astype(float)
        c = compare(ratio(b, np.ones(2000)), ratio(a, np.ones(2000)), 0.05)
        significant += c.p_value is not None and c.p_value < 0.05
    assert 2 <= significant <= 20
    a = (rng.random(4000) < 0.10).astype(float)
    b = (rng.random(4000) < 0.13).astype(float)
    c = compare(ratio(b, np.ones(4000)), ratio(a, np.ones(4000)), 0.05)
    assert c.p_value is not None and c.p_value < 0.01
    assert c.interval is not None and c.interval[0] > 0 and c.lift is not None and c.lift > 0


def test_sample_ratio_mismatch() -> None:
    assert sample_ratio_mismatch([500, 510], [1, 1]) > 0.5  # type: ignore[operator]
    assert sample_ratio_mismatch([500, 700], [1, 1]) < 0.001  # type: ignore[operator]
    assert sample_ratio_mismatch([0, 0], [1, 1]) is None


def _rec(n: int = 5) -> Recommendation:
    items = [
        RecommendedItem(item_id=f"i{k}", score=1.0, source="covisit", reason="r") for k in range(n)
    ]
    items[2] = RecommendedItem(
        item_id="ad", score=0, source="sponsored", reason="ad", sponsored=True
    )
    return Recommendation(recommendation_id="r", user_id="u", model_version="v", items=items)


POOL = Pool([f"i{k}" for k in range(40)])


def test_epsilon_exploration_is_uniform_with_exact_propensities() -> None:
    explorer = Explorer("epsilon", 0.5, seed=3)
    chosen: Counter[str] = Counter()
    for _ in range(3000):
        rec = explorer.apply(_rec(), POOL, lambda _i: {})
        ids = [i.item_id for i in rec.items]
        assert len(set(ids)) == len(ids)  # swaps, never duplicates
        assert rec.items[2].item_id == "ad"  # sponsored slots are never explored
        for pos, item in enumerate(rec.items):
            if item.explored:
                assert item.source == "exploration"
                if pos == 0:
                    assert item.propensity == pytest.approx(1 / 40)  # first explored: whole pool
                    chosen[item.item_id] += 1
    assert rec.sources.get("exploration", 0) == sum(i.explored for i in rec.items)
    freq = np.array([chosen[i] for i in POOL.ids]) / sum(chosen.values())
    assert freq.max() < 3 / 40 and len(chosen) == 40  # ~uniform over the pool


def test_thompson_propensity_estimates_the_choice_frequency() -> None:
    stats = {f"i{k}": (k, 40) for k in range(10)}  # item k: k clicks in 40 impressions
    explorer = Explorer("thompson", 1.0, draws=2000, seed=4, stats=lambda: stats)
    pool = Pool([f"i{k}" for k in range(10)])
    picks: Counter[str] = Counter()
    props: dict[str, float] = {}
    for _ in range(1500):
        drawn = explorer._draw(pool, set())
        assert drawn is not None
        item, p = drawn
        picks[item] += 1
        props[item] = p
    assert picks.most_common(1)[0][0] == "i9"
    for item, p in props.items():
        assert p == pytest.approx(picks[item] / 1500, abs=0.04)


def test_no_exploration_without_share() -> None:
    rec = _rec()
    assert Explorer("epsilon", 0.0).apply(rec, POOL, lambda _i: {}) is rec


def test_the_pool_is_built_only_when_a_slot_is_explored() -> None:
    built = []

    def pool() -> Pool:
        built.append(1)
        return POOL

    never = Explorer("epsilon", 1e-9, seed=0)
    for _ in range(50):
        never.apply(_rec(), pool, lambda _i: {})
    assert built == []
    Explorer("epsilon", 1.0, seed=0).apply(_rec(), pool, lambda _i: {})
    assert built == [1]


def test_exploration_stops_when_the_pool_is_exhausted() -> None:
    small = Pool(["i0", "i1"])
    rec = Explorer("epsilon", 1.0, seed=1).apply(_rec(), small, lambda _i: {})
    assert sum(i.explored for i in rec.items) == 2
    ids = [i.item_id for i in rec.items]
    assert len(set(ids)) == len(ids)
