"""Statistics of experiment reports: ratio metrics with user-clustered variance.

Impressions of one shopper are correlated, so a per-impression binomial interval is
too narrow. Each metric is a ratio of per-user sums ``R = Σx_u / Σy_u`` (CTR: clicks
over impressions; conversion: purchases over clicks; RPM: 1000 × revenue over
impressions) and its variance comes from the delta method over users (Deng, Knoblich
& Lu, "Applying the Delta Method in Metric Analytics", KDD 2018)::

    Var(R) ≈ (1/n) (s_x²/ȳ² − 2 x̄ s_xy/ȳ³ + x̄² s_y²/ȳ⁴)

Two variants are compared with a two-sided z-test on the difference (independent
groups), Bonferroni-corrected over the comparisons with the control; the relative
lift's interval uses the delta method as well. A sample-ratio-mismatch check
(chi-square of users per variant against the configured shares) flags broken
assignment or logging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True, slots=True)
class RatioEstimate:
    value: float | None
    variance: float | None
    n: int

    def interval(self, alpha: float) -> tuple[float, float] | None:
        if self.value is None or self.variance is None:
            return None
        half = float(stats.norm.ppf(1 - alpha / 2)) * math.sqrt(max(self.variance, 0.0))
        return (self.value - half, self.value + half)


def ratio(x: np.ndarray, y: np.ndarray) -> RatioEstimate:
    """``Σx / Σy`` over users with its delta-method variance."""
    n = int(x.shape[0])
    if n == 0 or float(y.sum()) == 0:
        return RatioEstimate(None, None, n)
    value = float(x.sum() / y.sum())
    if n < 2:
        return RatioEstimate(value, None, n)
    mx, my = float(x.mean()), float(y.mean())
    cov = np.cov(np.vstack([x, y]), ddof=1)
    var = (cov[0, 0] / my**2 - 2 * mx * cov[0, 1] / my**3 + mx**2 * cov[1, 1] / my**4) / n
    return RatioEstimate(value, float(max(var, 0.0)), n)


@dataclass(frozen=True, slots=True)
class Comparison:
    diff: float | None
    interval: tuple[float, float] | None
    lift: float | None
    lift_interval: tuple[float, float] | None
    z: float | None
    p_value: float | None


def compare(treatment: RatioEstimate, control: RatioEstimate, alpha: float) -> Comparison:
    """Treatment minus control: difference, relative lift, two-sided p-value."""
    t, c = treatment, control
    if t.value is None or c.value is None or t.variance is None or c.variance is None:
        return Comparison(None, None, None, None, None, None)
    diff = t.value - c.value
    se = math.sqrt(t.variance + c.variance)
    zq = float(stats.norm.ppf(1 - alpha / 2))
    if se == 0:
        z, p = (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    else:
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
    lift = lift_ci = None
    if c.value > 0:
        lift = t.value / c.value - 1
        lift_se = math.sqrt(t.variance / c.value**2 + t.value**2 * c.variance / c.value**4)
        lift_ci = (lift - zq * lift_se, lift + zq * lift_se)
    return Comparison(diff, (diff - zq * se, diff + zq * se), lift, lift_ci, z, p)


def sample_ratio_mismatch(users: list[int], shares: list[float]) -> float | None:
    """p-value of the chi-square test of users per variant against the shares."""
    total = sum(users)
    if total == 0 or len(users) < 2:
        return None
    expected = np.asarray(shares, dtype=np.float64) / sum(shares) * total
    observed = np.asarray(users, dtype=np.float64)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    return float(stats.chi2.sf(chi2, len(users) - 1))
