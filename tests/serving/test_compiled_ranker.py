"""The learned ranker through compiled trees (lleaves) gives LightGBM's scores, and
falls back to LightGBM when the fast path is unavailable or fails.

All data here is SYNTHETIC.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from shopcast.serving import compiled
from shopcast.serving.ranker import LearnedRanker, feature_columns


def _rows(rng: np.random.Generator, n: int, m: int, missing: float = 0.2) -> np.ndarray:
    """Features like the ranker's: uniform, some exact zeros, some NaN (unknown)."""
    x = rng.uniform(-1.0, 2.0, size=(n, m))
    x[rng.random(x.shape) < 0.1] = 0.0
    x[rng.random(x.shape) < missing] = np.nan
    return x


def _ranker(rng: np.random.Generator) -> LearnedRanker:
    """A small LambdaRank ranker whose relevance depends on two columns, one often NaN
    (so the trees route missing values)."""
    cols = feature_columns()
    x = _rows(rng, 3000, len(cols))
    a, b = cols.index("aff_brand"), cols.index("price_vs_user")
    y = ((np.nan_to_num(x[:, a], nan=0.5) > 0.8) + (np.isnan(x[:, b]))).astype(np.int64)
    ranker = LearnedRanker(n_estimators=30, min_child_samples=5, num_leaves=15)
    return ranker.fit_groups(x, y, np.full(100, 30, np.int64), columns=cols)


def test_compiled_scores_equal_lightgbm_on_random_rows_with_missing_values() -> None:
    pytest.importorskip("lleaves")
    rng = np.random.default_rng(0)
    ranker = _ranker(rng)
    assert ranker.fast_ is None
    assert ranker.compile() and ranker.fast_ is not None
    x = _rows(rng, 2000, len(ranker.columns_), missing=0.3)
    x[:50] = np.nan  # rows with nothing known
    expected = ranker.booster_.predict(x, num_threads=1)
    got = ranker.predict(x)
    assert np.abs(got - expected).max() <= 1e-9
    # rows at, just below and just above every split threshold
    check = compiled.check_rows(ranker.booster_, n=2000, seed=5)
    np.testing.assert_allclose(
        ranker.predict(check), ranker.booster_.predict(check, num_threads=1), rtol=0, atol=1e-9
    )
    assert ranker.predict(np.empty((0, len(ranker.columns_)))).shape == (0,)


@pytest.mark.parametrize("zero_as_missing", [False, True])
def test_compiled_trees_with_categorical_splits_and_missing_modes(zero_as_missing: bool) -> None:
    """Not used by the ranker's features today (all numeric), but the fast path must not
    silently diverge if a model has them."""
    pytest.importorskip("lleaves")
    rng = np.random.default_rng(1)
    n = 4000
    x = np.column_stack(
        [rng.integers(0, 12, n).astype(float), rng.normal(size=n), rng.uniform(size=n)]
    )
    x[rng.random(n) < 0.15, 1] = np.nan
    x[rng.random(n) < 0.15, 2] = 0.0
    y = np.isin(x[:, 0], [2, 5, 7]) * 2.0 + np.nan_to_num(x[:, 1]) + 3 * (x[:, 2] == 0)
    params = {
        "objective": "regression",
        "num_leaves": 15,
        "min_data_in_leaf": 5,
        "verbose": -1,
        "zero_as_missing": zero_as_missing,
        "num_threads": 1,
    }
    data = lgb.Dataset(x, label=y, categorical_feature=[0])
    booster = lgb.train(params, data, num_boost_round=25)
    assert "cat_threshold" in booster.model_to_string()
    fast = compiled.compile_booster(booster)
    assert fast is not None
    test = np.column_stack(
        [rng.integers(-2, 15, 3000).astype(float), rng.normal(size=3000), rng.uniform(size=3000)]
    )
    test[rng.random(3000) < 0.2] = np.nan
    test[rng.random(3000) < 0.1, 2] = 0.0
    np.testing.assert_allclose(
        fast.predict(test), booster.predict(test, num_threads=1), rtol=0, atol=1e-9
    )


def test_without_lleaves_the_ranker_keeps_lightgbm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "available", lambda: False)
    rng = np.random.default_rng(2)
    ranker = _ranker(rng)
    assert not ranker.compile() and ranker.fast_ is None
    x = _rows(rng, 300, len(ranker.columns_))
    np.testing.assert_array_equal(ranker.predict(x), ranker.booster_.predict(x, num_threads=1))


def test_a_compiled_model_that_differs_from_lightgbm_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("lleaves")
    real = compiled._compile

    class Off:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def predict(self, x: np.ndarray) -> np.ndarray:
            out: np.ndarray = self.inner.predict(x)
            out[np.isnan(x[:, 0])] += 1e-6  # wrong only where column 0 is missing
            return out

    monkeypatch.setattr(compiled, "_compile", lambda text, m: Off(real(text, m)))
    compiled._compiled.clear()
    rng = np.random.default_rng(3)
    ranker = _ranker(rng)
    ranker.booster_ = lgb.Booster(model_str=ranker.booster_.model_to_string() + "\n")
    assert compiled.compile_booster(ranker.booster_) is None
    assert not ranker.compile()


def test_a_failing_compiled_model_falls_back_to_lightgbm() -> None:
    rng = np.random.default_rng(4)
    ranker = _ranker(rng)

    class Broken:
        def predict(self, x: np.ndarray) -> np.ndarray:
            raise RuntimeError("boom")

    ranker.fast_ = Broken()  # type: ignore[assignment]
    x = _rows(rng, 100, len(ranker.columns_))
    np.testing.assert_array_equal(ranker.predict(x), ranker.booster_.predict(x, num_threads=1))
    assert ranker.fast_ is None  # LightGBM from then on


def test_the_rank_stage_compiles_the_ranker_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("lleaves")
    from shopcast.models import Vocabulary
    from shopcast.serving import ranker as ranker_mod
    from shopcast.serving.catalog import CatalogIndex

    catalog = CatalogIndex(Vocabulary())
    ranker = _ranker(np.random.default_rng(5))
    monkeypatch.setattr(ranker_mod, "COMPILE", False)
    ranker_mod.RankStage(ranker, None, catalog)  # type: ignore[arg-type]
    assert ranker.fast_ is None
    monkeypatch.setattr(ranker_mod, "COMPILE", True)
    stage = ranker_mod.RankStage(ranker, None, catalog)  # type: ignore[arg-type]
    assert stage.ranker.fast_ is not None
