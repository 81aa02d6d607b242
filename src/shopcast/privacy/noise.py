"""Noise on released aggregates (differential privacy of counts).

A count query whose answer changes by at most ``sensitivity`` (L1 for Laplace, L2 for
Gaussian) when one user's data is added or removed is released with

- Laplace noise of scale ``b = sensitivity / ε`` (``δ = 0``: ε-DP), mean absolute error
  ``b``; or
- Gaussian noise of standard deviation ``σ = sensitivity · √(2 ln(1.25/δ)) / ε``
  (``δ > 0``: (ε, δ)-DP for ε ≤ 1, the classic analytic bound), mean absolute error
  ``σ √(2/π)``.

Each release spends its ε: releases compose (k releases of one dataset cost k·ε);
Shopcast does not keep a running budget. Released counts are rounded and clipped at 0
(post-processing, which costs nothing).

``item_user_counts``: users per item in a time window, each user counting for at most
``max_items_per_user`` items (their most recent ones), so one user changes the vector by
at most that many in L1 and its square root in L2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from shopcast.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Mechanism:
    """Laplace (``delta`` 0) or Gaussian noise for one (ε, δ) release."""

    epsilon: float
    delta: float = 0.0

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ConfigError(f"epsilon must be > 0, got {self.epsilon}")
        if not 0 <= self.delta < 1:
            raise ConfigError(f"delta must be in [0, 1), got {self.delta}")

    @property
    def name(self) -> str:
        return "laplace" if self.delta == 0 else "gaussian"

    def scale(self, l1: float, l2: float) -> float:
        """Laplace ``b`` or Gaussian ``σ`` for a query of these sensitivities."""
        if self.delta == 0:
            return l1 / self.epsilon
        return l2 * math.sqrt(2 * math.log(1.25 / self.delta)) / self.epsilon

    def expected_abs_error(self, l1: float, l2: float) -> float:
        s = self.scale(l1, l2)
        return s if self.delta == 0 else s * math.sqrt(2 / math.pi)

    def noisy(
        self,
        counts: npt.ArrayLike,
        l1: float = 1.0,
        l2: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> npt.NDArray[np.float64]:
        """``counts`` plus noise (not rounded)."""
        gen = rng if rng is not None else np.random.default_rng()
        values = np.asarray(counts, dtype=np.float64)
        s = self.scale(l1, l1 if l2 is None else l2)
        if self.delta == 0:
            return values + gen.laplace(0.0, s, values.shape)
        return values + gen.normal(0.0, s, values.shape)

    def release(
        self,
        counts: npt.ArrayLike,
        l1: float = 1.0,
        l2: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> npt.NDArray[np.int64]:
        """Noisy counts rounded and clipped at 0 (what is shown)."""
        return np.maximum(np.rint(self.noisy(counts, l1, l2, rng)), 0).astype(np.int64)


def item_user_counts(frame: pl.DataFrame, *, since: float, max_items_per_user: int) -> pl.DataFrame:
    """``item_id``, ``users``: distinct users per item since ``since`` (impressions left
    out), each user counted for at most ``max_items_per_user`` items (most recent)."""
    recent = (
        frame.filter(
            (pl.col("ts") >= since)
            & pl.col("user_id").is_not_null()
            & pl.col("item_id").is_not_null()
            & (pl.col("type") != "impression")
        )
        .group_by("user_id", "item_id")
        .agg(pl.col("ts").max())
        .sort(["user_id", "ts", "item_id"], descending=[False, True, False])
        .with_columns(pl.int_range(pl.len()).over("user_id").alias("rank"))
        .filter(pl.col("rank") < max_items_per_user)
    )
    return (
        recent.group_by("item_id")
        .agg(pl.len().alias("users"))
        .sort(["users", "item_id"], descending=[True, False])
    )
