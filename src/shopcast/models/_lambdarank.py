"""The LightGBM LambdaRank stage two shared by the two-stage models (``rerank``, ``seqrank``):
its parameters, training, and the booster kept beside the model as LightGBM's text format
(never pickle)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shopcast.errors import MissingDependencyError, ModelError

BOOSTER_FILE = "booster.txt"


def lightgbm() -> Any:
    try:
        import lightgbm
    except ImportError:  # pragma: no cover - lightgbm is a core dependency
        raise MissingDependencyError("lightgbm", "core") from None
    return lightgbm


def lambdarank_params(
    *, learning_rate: float, num_leaves: int, min_child_samples: int, seed: int
) -> dict[str, Any]:
    """LambdaRank on NDCG@10, bagged, deterministic, one thread."""
    return {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "learning_rate": learning_rate,
        "num_leaves": num_leaves,
        "min_child_samples": min_child_samples,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambdarank_truncation_level": 20,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "verbosity": -1,
    }


def train_lambdarank(
    x: npt.NDArray[Any],
    y: npt.NDArray[np.float64],
    group: npt.NDArray[np.int64],
    features: Sequence[str],
    params: dict[str, Any],
    n_trees: int,
) -> Any:
    ds = lightgbm().Dataset(x, label=y, group=group, feature_name=list(features))
    return lightgbm().train(params, ds, num_boost_round=n_trees)


def save_booster(path: Path, booster: Any) -> None:
    """Write ``booster`` beside the model (or remove a stale one when there is none)."""
    file = Path(path) / BOOSTER_FILE
    if booster is not None:
        file.write_text(booster.model_to_string())
    elif file.exists():
        file.unlink()


def load_booster(path: Path) -> Any:
    try:
        text = (Path(path) / BOOSTER_FILE).read_text()
    except OSError as exc:
        raise ModelError(f"cannot read the reranker at {path}: {exc}") from None
    return lightgbm().Booster(model_str=text)
