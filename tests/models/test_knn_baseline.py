"""kNN baseline and its blend on SYNTHETIC rating matrices (tiny, so each fit takes seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopcast.errors import ConfigError, ModelError
from shopcast.models import KNNBaseline, KNNBlend
from shopcast.models import knn_baseline as K

from .test_glocalk import SMALL, low_rank, rmse


@pytest.mark.parametrize("user_based", [True, False])
def test_neighbours_beat_the_baseline_alone(user_based: bool) -> None:
    train, hu, hi, hr = low_rank()
    model = KNNBaseline(user_based=user_based).fit(train)
    base = model.mu_ + model.user_bias_[hu] + model.item_bias_[hi]
    assert rmse(model.predict(hu, hi), hr) < 0.7 * rmse(base, hr)


def test_one_neighbour_matches_a_hand_computation() -> None:
    """k = 1: the prediction is the baseline plus the most similar rater's residual."""
    train, hu, hi, _ = low_rank(n_users=12, n_items=10, seed=2)
    model = KNNBaseline(k=1, shrinkage=0.0).fit(train)
    u, i, r = train.user, train.item, train.value
    resid = np.full((12, 10), np.nan)
    resid[u, i] = r - model.mu_ - model.user_bias_[u] - model.item_bias_[i]
    x, c = int(hu[0]), int(hi[0])
    best, best_sim = None, 0.0
    for v in np.flatnonzero(~np.isnan(resid[:, c])):
        both = ~np.isnan(resid[x]) & ~np.isnan(resid[v])
        a, b = resid[x, both], resid[v, both]
        sim = float(a @ b / np.sqrt((a @ a) * (b @ b))) if both.sum() >= 2 else 0.0
        if sim > best_sim:
            best, best_sim = v, sim
    expected = model.mu_ + model.user_bias_[x] + model.item_bias_[c]
    if best is not None:
        expected += resid[best, c]
    got = model.predict(hu[:1], hi[:1])[0]
    assert got == pytest.approx(np.clip(expected, 1, 5))


def test_saved_model_predicts_the_same_and_unknowns_get_the_baseline(tmp_path: Path) -> None:
    train, hu, hi, _ = low_rank(seed=1)
    model = KNNBaseline(user_based=False, k=5).fit(train)
    model.save(tmp_path / "m")
    loaded = KNNBaseline.load(tmp_path / "m", train.items)
    np.testing.assert_array_equal(loaded.predict(hu, hi), model.predict(hu, hi))
    assert loaded.k == 5 and not loaded.user_based
    unknown = model.predict(np.array([-1, 0]), np.array([0, 10_000]))
    assert unknown[0] == pytest.approx(model.mu_ + model.item_bias_[0])
    assert unknown[1] == pytest.approx(model.mu_ + model.user_bias_[0])


@pytest.mark.parametrize(
    ("params", "field"),
    [({"k": 0}, "k"), ({"min_k": 5, "k": 2}, "min_k"), ({"shrinkage": -1}, "shrinkage")],
)
def test_bad_hyperparameters_name_the_field(params: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        KNNBaseline(**params)  # type: ignore[arg-type]


def test_refuses_matrices_too_large_for_its_dense_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(K, "MAX_CELLS", 100)
    train, *_ = low_rank()
    with pytest.raises(ModelError, match="dense"):
        KNNBaseline().fit(train)


def test_blend_weights_all_four_components() -> None:
    train, hu, hi, hr = low_rank(seed=3)
    blend = KNNBlend(
        components=[
            ["glocal_k", {**SMALL, "reg_weights": 1.0}],
            ["mf_bayes", {"samples": 10}],
            ["knn_baseline", {"user_based": True}],
            ["knn_baseline", {"user_based": False}],
        ]
    ).fit(train)
    assert blend.weights_.shape == (5,)
    mean = float(train.value.mean())
    assert rmse(blend.predict(hu, hi), hr) < 0.6 * rmse(np.full(hr.shape, mean), hr)


def test_benchmarks_run_them_only_when_named(tmp_path: Path) -> None:
    from shopcast.evaluation import benchmarks as B

    q1 = B.BENCHMARKS["q1"]
    default, _ = B._model_entries(q1, B.RunOptions(data=tmp_path), B.Side())
    assert not {"knn_baseline", "blend_knn"} & {e.name for e in default}
    named, _ = B._model_entries(q1, B.RunOptions(data=tmp_path, models=["blend_knn"]), B.Side())
    assert [e.name for e in named] == ["blend_knn"]
