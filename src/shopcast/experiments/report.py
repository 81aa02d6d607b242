"""The report of an experiment: per-variant metrics with intervals and tests.

Built from attributed impressions (``feedback.attribution``) labelled with the
experiment (impression context ``experiment`` / ``variant``). Units are shoppers
(``subject``: user, else session); see ``stats`` for the intervals. The first variant
is the control; every other one is compared with it at ``alpha / (variants - 1)``
(Bonferroni). The ``winner`` is the variant that beats the control significantly on
the primary metric with the largest value (or the control when it beats every other
variant significantly); None means "no significant difference yet". A sample ratio
mismatch (p < 0.001) is reported and blocks a winner.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from shopcast.experiments.model import Experiment
from shopcast.experiments.stats import RatioEstimate, compare, ratio, sample_ratio_mismatch

METRICS = ("ctr", "conversion_rate", "rpm")
SRM_ALPHA = 0.001


def _estimates(per_user: pl.DataFrame) -> dict[str, RatioEstimate]:
    imps = per_user["impressions"].to_numpy().astype(np.float64)
    clicks = per_user["clicks"].to_numpy().astype(np.float64)
    purchases = per_user["purchases"].to_numpy().astype(np.float64)
    revenue = per_user["revenue"].to_numpy().astype(np.float64)
    return {
        "ctr": ratio(clicks, imps),
        "conversion_rate": ratio(purchases[clicks > 0], clicks[clicks > 0]),
        "rpm": ratio(1000.0 * revenue, imps),
    }


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(x, digits)


def _pair(x: tuple[float, float] | None) -> list[float] | None:
    return None if x is None else [round(x[0], 6), round(x[1], 6)]


def experiment_report(
    experiment: Experiment, imps: pl.DataFrame, *, alpha: float = 0.05
) -> dict[str, Any]:
    """The JSON report of ``experiment`` over attributed impressions ``imps``."""
    mine = imps.filter(pl.col("experiment") == experiment.experiment_id)
    per_user = mine.group_by("variant", "subject").agg(
        pl.len().alias("impressions"),
        pl.col("clicked").sum().alias("clicks"),
        pl.col("purchased").sum().alias("purchases"),
        pl.col("revenue").sum().alias("revenue"),
    )
    variants: list[dict[str, Any]] = []
    estimates: dict[str, dict[str, RatioEstimate]] = {}
    for v in experiment.variants:
        rows = per_user.filter(pl.col("variant") == v.name)
        est = estimates[v.name] = _estimates(rows)
        variants.append(
            {
                "name": v.name,
                "share": v.share,
                "model_version": v.model_version,
                "diversity": v.diversity,
                "users": rows.height,
                "impressions": int(rows["impressions"].sum()) if rows.height else 0,
                "clicks": int(rows["clicks"].sum()) if rows.height else 0,
                "purchases": int(rows["purchases"].sum()) if rows.height else 0,
                "revenue": round(float(rows["revenue"].sum()), 4) if rows.height else 0.0,
                "metrics": {
                    m: {"value": _round(e.value), "ci": _pair(e.interval(alpha))}
                    for m, e in est.items()
                },
            }
        )
    control = experiment.variants[0].name
    corrected = alpha / max(1, len(experiment.variants) - 1)
    comparisons = []
    for v in experiment.variants[1:]:
        for m in METRICS:
            c = compare(estimates[v.name][m], estimates[control][m], corrected)
            comparisons.append(
                {
                    "variant": v.name,
                    "control": control,
                    "metric": m,
                    "diff": _round(c.diff),
                    "ci": _pair(c.interval),
                    "relative_lift": _round(c.lift),
                    "lift_ci": _pair(c.lift_interval),
                    "p_value": None if c.p_value is None else float(f"{c.p_value:.3g}"),
                    "significant": c.p_value is not None and c.p_value < corrected,
                }
            )
    srm_p = sample_ratio_mismatch(
        [v["users"] for v in variants], [v.share for v in experiment.variants]
    )
    srm = srm_p is not None and srm_p < SRM_ALPHA
    return {
        "experiment": experiment.experiment_id,
        "status": experiment.status,
        "metric": experiment.metric,
        "alpha": alpha,
        "corrected_alpha": corrected,
        "variants": variants,
        "comparisons": comparisons,
        "sample_ratio_mismatch": {"p_value": srm_p, "detected": srm},
        "winner": None if srm else _winner(experiment, comparisons),
    }


def _winner(experiment: Experiment, comparisons: list[dict[str, Any]]) -> str | None:
    primary = [c for c in comparisons if c["metric"] == experiment.metric]
    better = [c for c in primary if c["significant"] and (c["diff"] or 0) > 0]
    if better:
        return str(max(better, key=lambda c: c["diff"])["variant"])
    if primary and all(c["significant"] and (c["diff"] or 0) < 0 for c in primary):
        return experiment.variants[0].name
    return None
