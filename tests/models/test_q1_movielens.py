"""Q1 sanity on the REAL MovieLens 100K u1 fold (skipped when the shared data is absent)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from shopcast.models import model_class

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.dataset
@pytest.mark.parametrize("name", ["mf", "mf_als", "svdpp", "mf_bayes"])
def test_u1_rmse_is_sane(name: str, data_path: Path) -> None:
    folder = data_path / "movielens-100k"
    if not (folder / "u1.base").exists():
        pytest.skip("MovieLens 100K is not under SHOPCAST_DATA")
    spec = importlib.util.spec_from_file_location("bench_q1", ROOT / "bench/bench_q1_models.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    train, user, item, r = bench.read_fold(folder, 1, "test")
    model = model_class(name)().fit(train)
    rmse = float(np.sqrt(np.mean((model.predict(user, item) - r) ** 2)))
    assert rmse < 0.95
