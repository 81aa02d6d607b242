"""GLocal-K and its blend on SYNTHETIC rating matrices (tiny, so each fit takes seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shopcast.domain import EventType
from shopcast.errors import ConfigError, ModelError
from shopcast.models import GLocalK, GLocalKBlend, Interactions, Vocabulary
from shopcast.models import glocalk as G
from shopcast.models._base import EVENT_CODES


def low_rank(
    n_users: int = 40, n_items: int = 30, density: float = 0.5, seed: int = 0
) -> tuple[Interactions, np.ndarray, np.ndarray, np.ndarray]:
    """SYNTHETIC 1-5 star ratings from two user groups with opposite tastes plus noise;
    ``(train, held-out users, held-out items, held-out ratings)`` with 20 % held out."""
    rng = np.random.default_rng(seed)
    taste = np.where(rng.random(n_users) < 0.5, 1.0, -1.0)
    kind = np.where(np.arange(n_items) % 2 == 0, 1.0, -1.0)
    full = 3.0 + 1.5 * np.outer(taste, kind) + rng.normal(0, 0.3, (n_users, n_items))
    full = np.clip(np.rint(full), 1, 5)
    u, i = np.nonzero(rng.random((n_users, n_items)) < density)
    r = full[u, i]
    held = rng.random(u.shape[0]) < 0.2
    users = Vocabulary([f"u:{k}" for k in range(n_users)])
    items = Vocabulary([str(k) for k in range(n_items)])
    n = int((~held).sum())
    train = Interactions(
        users=users,
        items=items,
        user=u[~held].astype(np.int64),
        item=i[~held].astype(np.int64),
        type=np.full(n, EVENT_CODES[EventType.RATE], dtype=np.int64),
        ts=np.arange(n, dtype=np.float64),
        value=r[~held].astype(np.float64),
    )
    return train, u[held], i[held], r[held]


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - truth) ** 2)))


SMALL = {"n_hidden": 16, "pre_epochs": 40, "fine_epochs": 20}


def test_learns_a_low_rank_matrix_better_than_the_mean() -> None:
    train, hu, hi, hr = low_rank()
    model = GLocalK(**SMALL, reg_weights=1.0).fit(train)
    mean = float(train.value.mean())
    assert rmse(model.predict(hu, hi), hr) < 0.6 * rmse(np.full(hr.shape, mean), hr)
    pre, fine = model.epochs_
    assert 1 <= pre <= SMALL["pre_epochs"] and 0 <= fine <= SMALL["fine_epochs"]


def test_fine_tuning_runs_and_the_saved_model_predicts_the_same(tmp_path: Path) -> None:
    train, hu, hi, _ = low_rank(seed=1)
    model = GLocalK(**SMALL, holdout=0.0, fine_tol=0.0).fit(train)  # no holdout: full caps
    assert model.epochs_[1] == SMALL["fine_epochs"]
    assert model.global_kernel_.shape == (3, 3)
    assert not np.allclose(model.global_kernel_, np.eye(3)[1][:, None] * np.eye(3)[1])
    model.save(tmp_path / "m")
    loaded = GLocalK.load(tmp_path / "m", train.items)
    np.testing.assert_array_equal(loaded.predict(hu, hi), model.predict(hu, hi))
    assert loaded.epochs_ == model.epochs_


def test_numpy_convolution_matches_torch() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((7, 5)).astype(np.float32)
    k = rng.normal(size=(3, 3)).astype(np.float32)
    ref = torch.nn.functional.conv2d(
        torch.from_numpy(x)[None, None], torch.from_numpy(k)[None, None], padding=1
    )[0, 0].numpy()
    np.testing.assert_allclose(G._conv2d(x, k), ref, rtol=1e-5, atol=1e-5)


def test_unknown_users_get_the_item_average_and_unknown_items_the_mean() -> None:
    train, *_ = low_rank(seed=2)
    model = GLocalK(**SMALL).fit(train)
    out = model.predict(np.array([-1, 10**6, 0]), np.array([0, 0, -1]))
    assert out[0] == out[1] == pytest.approx(float(np.clip(model.item_prior_[0], 1, 5)))
    assert out[2] == pytest.approx(model.mu_)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n_hidden": 0}, "n_hidden"),
        ({"conv_size": 2}, "conv_size"),
        ({"holdout": 1.0}, "holdout"),
        ({"device": "tpu"}, "device"),
        ({"reg_weights": -1.0}, "reg_weights"),
        ({"fine_epochs": -1}, "fine_epochs"),
    ],
)
def test_bad_hyperparameters_name_the_field(params: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        GLocalK(**params)  # type: ignore[arg-type]


def test_refuses_matrices_too_large_for_its_dense_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(G, "MAX_CELLS", 100)
    train, *_ = low_rank()
    with pytest.raises(ModelError, match="dense items x users"):
        GLocalK(**SMALL).fit(train)


def test_blend_weights_both_components() -> None:
    train, hu, hi, hr = low_rank(seed=3)
    blend = GLocalKBlend(
        components=[["glocal_k", {**SMALL, "reg_weights": 1.0}], ["mf_bayes", {"samples": 10}]]
    ).fit(train)
    assert blend.weights_.shape == (3,)
    mean = float(train.value.mean())
    assert rmse(blend.predict(hu, hi), hr) < 0.6 * rmse(np.full(hr.shape, mean), hr)


def test_benchmarks_run_it_only_when_named(tmp_path: Path) -> None:
    from shopcast.evaluation import benchmarks as B

    q1 = B.BENCHMARKS["q1"]
    default, _ = B._model_entries(q1, B.RunOptions(data=tmp_path), B.Side())
    assert "mf_bayes" in {e.name for e in default}
    assert not {"glocal_k", "blend_glk"} & {e.name for e in default}
    named, _ = B._model_entries(q1, B.RunOptions(data=tmp_path, models=["glocal_k"]), B.Side())
    assert [e.name for e in named] == ["glocal_k"]
