"""Online metrics over attributed impressions (``attribution.attribute``).

Per window (impressions shown in ``[now - window, now]``; their clicks and purchases
may arrive later, so the newest minutes read low until feedback is in):

- ``ctr`` = clicked impressions / impressions;
- ``conversion_rate`` = purchased impressions / clicked impressions;
- ``purchase_rate`` = purchased impressions / impressions;
- ``rpm`` = revenue per thousand impressions;
- ``avg_click_position`` = mean 1-based position of clicked impressions;
- ``coverage`` = distinct items shown / catalog size (when the catalog size is known);
- ``intra_list_diversity`` = mean over recommendations of the share of item pairs in
  different categories (leaf category; 1 - Σ_c n_c(n_c - 1) / (n(n - 1)));
- ``exposure_gini`` = Gini coefficient of impressions per shown item (0: even).

Breakdowns by ``model_version``, ``scene``, ``source``, ``position``, ``variant``
carry the counting metrics (impressions, clicks, ctr, purchases, conversion, rpm).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

BREAKDOWNS = ("model_version", "scene", "source", "position", "experiment", "variant")


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else round(num / den, 6)


def counts(imps: pl.DataFrame) -> dict[str, Any]:
    """Impressions, clicks, carts, purchases, revenue and their rates."""
    n = imps.height
    clicks = int(imps["clicked"].sum()) if n else 0
    purchases = int(imps["purchased"].sum()) if n else 0
    revenue = float(imps["revenue"].sum()) if n else 0.0
    clicked_pos = imps.filter(pl.col("clicked"))["position"] if n else pl.Series([], dtype=pl.Int64)
    return {
        "impressions": n,
        "clicks": clicks,
        "carts": int(imps["carted"].sum()) if n else 0,
        "purchases": purchases,
        "revenue": round(revenue, 4),
        "ctr": _ratio(clicks, n),
        "conversion_rate": _ratio(purchases, clicks),
        "purchase_rate": _ratio(purchases, n),
        "rpm": _ratio(1000.0 * revenue, n),
        "avg_click_position": (
            round(float(clicked_pos.mean()), 4)  # type: ignore[arg-type]
            if clicked_pos.len() and clicked_pos.null_count() < clicked_pos.len()
            else None
        ),
    }


def diversity(imps: pl.DataFrame, categories: Mapping[str, str] | None) -> dict[str, Any]:
    """Exposure concentration and (with item categories) intra-list diversity."""
    if imps.height == 0:
        return {"items_shown": 0, "exposure_gini": None, "intra_list_diversity": None}
    per_item = np.sort(imps.group_by("item_id").len()["len"].to_numpy().astype(np.float64))
    k = per_item.shape[0]
    gini = (
        float((2 * np.arange(1, k + 1) - k - 1) @ per_item / (k * per_item.sum())) if k > 1 else 0.0
    )
    ild: float | None = None
    if categories:
        cats = imps.select(
            "recommendation_id",
            pl.col("item_id")
            .replace_strict(categories, default="", return_dtype=pl.Utf8)
            .alias("cat"),
        )
        per = (
            cats.group_by("recommendation_id", "cat")
            .len()
            .group_by("recommendation_id")
            .agg(
                pl.col("len").sum().alias("n"),
                (pl.col("len") * (pl.col("len") - 1)).sum().alias("same"),
            )
            .filter(pl.col("n") > 1)
        )
        if per.height:
            values = 1.0 - per["same"].cast(pl.Float64) / (per["n"] * (per["n"] - 1))
            ild = round(float(values.mean()), 6)  # type: ignore[arg-type]
    return {"items_shown": k, "exposure_gini": round(gini, 6), "intra_list_diversity": ild}


def window_metrics(
    imps: pl.DataFrame,
    *,
    now: float,
    window_s: float,
    catalog_size: int | None = None,
    categories: Mapping[str, str] | None = None,
    breakdowns: tuple[str, ...] = BREAKDOWNS,
) -> dict[str, Any]:
    """Every metric of one window, overall and per breakdown."""
    part = imps.filter((pl.col("ts") > now - window_s) & (pl.col("ts") <= now))
    overall = {
        **counts(part),
        "recommendations": part["recommendation_id"].n_unique() if part.height else 0,
        "shoppers": part["subject"].n_unique() if part.height else 0,
        **diversity(part, categories),
    }
    shown = overall["items_shown"]
    overall["coverage"] = _ratio(shown, catalog_size) if catalog_size else None
    out: dict[str, Any] = {"window_s": window_s, "overall": overall}
    for column in breakdowns:
        groups = []
        for key, group in part.filter(pl.col(column).is_not_null()).group_by(column):
            groups.append({column: key[0], **counts(group)})
        groups.sort(key=lambda g: str(g[column]) if column != "position" else g[column])
        out[f"by_{column}"] = groups
    return out
