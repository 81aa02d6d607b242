"""Attribution: which recommendation earned each click, add-to-cart and purchase.

Input is a frame of the event log (``seq`` + ``EVENT_COLUMNS``). Output is one row per
impression (``impression_schema``) with its outcome:

- **clicked**: a ``click`` (or a ``view``) carrying the impression's
  ``recommendation_id`` and item, at most ``click_window_s`` after the impression
  (a minute of client clock skew before it is tolerated).
- **carted / purchased, revenue**: an ``add_to_cart`` / ``purchase`` of the item that
  carries the ``recommendation_id`` (direct), or, without one, the latest click of the
  same shopper (user, else session) on that item at most ``purchase_window_s`` before
  (last-click attribution). Each cart/purchase event is attributed at most once;
  revenue is ``price × quantity`` (quantity 1 when absent, 0 without a price).

The impression's context carries what produced it: ``position``, ``scene``,
``source``, ``model_version``, ``sponsored``, and, when set, ``experiment``,
``variant``, ``explored`` and ``propensity`` (``serving.impressions``).
"""

from __future__ import annotations

import polars as pl

#: Event types the attribution reads (everything else is dropped on load).
FEEDBACK_TYPES = ("impression", "click", "view", "add_to_cart", "purchase")
CLOCK_SKEW_S = 60.0

CONTEXT_SCHEMA = pl.Struct(
    {
        "position": pl.Int64,
        "scene": pl.Utf8,
        "source": pl.Utf8,
        "model_version": pl.Utf8,
        "sponsored": pl.Boolean,
        "experiment": pl.Utf8,
        "variant": pl.Utf8,
        "explored": pl.Boolean,
        "propensity": pl.Float64,
    }
)

IMPRESSION_SCHEMA: dict[str, pl.DataType] = {
    "recommendation_id": pl.Utf8(),
    "item_id": pl.Utf8(),
    "ts": pl.Float64(),
    "user_id": pl.Utf8(),
    "session_id": pl.Utf8(),
    "subject": pl.Utf8(),
    "position": pl.Int64(),
    "scene": pl.Utf8(),
    "source": pl.Utf8(),
    "model_version": pl.Utf8(),
    "sponsored": pl.Boolean(),
    "experiment": pl.Utf8(),
    "variant": pl.Utf8(),
    "explored": pl.Boolean(),
    "propensity": pl.Float64(),
    "clicked": pl.Boolean(),
    "carted": pl.Boolean(),
    "purchased": pl.Boolean(),
    "revenue": pl.Float64(),
}


def _subject() -> pl.Expr:
    return (
        pl.when(pl.col("user_id").is_not_null())
        .then(pl.lit("u:") + pl.col("user_id"))
        .otherwise(pl.lit("s:") + pl.col("session_id"))
        .alias("subject")
    )


def feedback_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows attribution needs (types in ``FEEDBACK_TYPES``; views only with a
    recommendation id), with the columns it reads."""
    return frame.filter(
        pl.col("type").is_in(FEEDBACK_TYPES)
        & ((pl.col("type") != "view") | pl.col("recommendation_id").is_not_null())
    ).select(
        "seq",
        "type",
        "user_id",
        "session_id",
        "item_id",
        "ts",
        "quantity",
        "price",
        "recommendation_id",
        "context",
    )


def attribute(
    frame: pl.DataFrame, *, click_window_s: float = 3600.0, purchase_window_s: float = 86_400.0
) -> pl.DataFrame:
    """One row per impression with its attributed outcome (see the module docstring)."""
    if frame.height == 0:
        return pl.DataFrame(schema=IMPRESSION_SCHEMA)
    frame = frame.with_columns(_subject())
    imps = (
        frame.filter((pl.col("type") == "impression") & pl.col("recommendation_id").is_not_null())
        .unique(["recommendation_id", "item_id"], keep="first", maintain_order=True)
        .with_columns(pl.col("context").str.json_decode(CONTEXT_SCHEMA).alias("ctx"))
        .select(
            "recommendation_id",
            "item_id",
            "ts",
            "user_id",
            "session_id",
            "subject",
            *[pl.col("ctx").struct.field(f).alias(f) for f in CONTEXT_SCHEMA.to_schema()],
        )
    )
    if imps.height == 0:
        return pl.DataFrame(schema=IMPRESSION_SCHEMA)
    shown = imps.select("recommendation_id", "item_id", pl.col("ts").alias("imp_ts"), "subject")

    clicks = (
        frame.filter(
            pl.col("type").is_in(["click", "view"]) & pl.col("recommendation_id").is_not_null()
        )
        .select("recommendation_id", "item_id", pl.col("ts").alias("click_ts"))
        .join(shown, on=["recommendation_id", "item_id"], how="inner")
        .filter(
            (pl.col("click_ts") >= pl.col("imp_ts") - CLOCK_SKEW_S)
            & (pl.col("click_ts") <= pl.col("imp_ts") + click_window_s)
        )
        .group_by("recommendation_id", "item_id")
        .agg(pl.col("click_ts").min(), pl.col("subject").first())
    )

    conversions = frame.filter(pl.col("type").is_in(["add_to_cart", "purchase"])).select(
        "seq",
        "type",
        "item_id",
        "ts",
        "subject",
        "recommendation_id",
        (pl.col("price").fill_null(0.0) * pl.col("quantity").fill_null(1.0)).alias("amount"),
    )
    direct = (
        conversions.filter(pl.col("recommendation_id").is_not_null())
        .join(shown.drop("subject"), on=["recommendation_id", "item_id"], how="inner")
        .filter(
            (pl.col("ts") >= pl.col("imp_ts") - CLOCK_SKEW_S)
            & (pl.col("ts") <= pl.col("imp_ts") + purchase_window_s)
        )
        .select("seq", "type", "recommendation_id", "item_id", "amount")
    )
    loose = conversions.filter(pl.col("recommendation_id").is_null()).drop("recommendation_id")
    last_click = (
        clicks.select("subject", "item_id", pl.col("click_ts").alias("ts"), "recommendation_id")
        .with_columns(pl.col("ts").alias("matched_ts"))
        .sort("ts")
    )
    if loose.height and last_click.height:
        indirect = (
            loose.sort("ts")
            .join_asof(
                last_click,
                on="ts",
                by=["subject", "item_id"],
                strategy="backward",
                tolerance=purchase_window_s,
                check_sortedness=False,  # sorted by ts above; polars cannot check per group
            )
            .filter(pl.col("recommendation_id").is_not_null())
            .select("seq", "type", "recommendation_id", "item_id", "amount")
        )
    else:
        indirect = direct.clear()
    outcomes = (
        pl.concat([direct, indirect])
        .unique("seq", keep="first", maintain_order=True)
        .group_by("recommendation_id", "item_id")
        .agg(
            (pl.col("type") == "add_to_cart").any().alias("carted"),
            (pl.col("type") == "purchase").any().alias("purchased"),
            pl.col("amount").filter(pl.col("type") == "purchase").sum().alias("revenue"),
        )
    )
    out = (
        imps.join(
            clicks.select("recommendation_id", "item_id", pl.lit(True).alias("clicked")),
            on=["recommendation_id", "item_id"],
            how="left",
        )
        .join(outcomes, on=["recommendation_id", "item_id"], how="left")
        .with_columns(
            pl.col("clicked").fill_null(False),
            pl.col("carted").fill_null(False),
            pl.col("purchased").fill_null(False),
            pl.col("revenue").fill_null(0.0),
            pl.col("sponsored").fill_null(False),
            pl.col("explored").fill_null(False),
        )
    )
    return out.select([pl.col(c).cast(t) for c, t in IMPRESSION_SCHEMA.items()])
