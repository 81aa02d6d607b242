"""Batch path of the user profiles: every ``UserState`` from an event-log frame at once.

Each aggregate of ``UserState.observe`` is computed here with polars group-bys over
the whole frame (events joined with the item table); only the per-user results are
turned into Python objects. Affinities are anchored at each user's last event time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import polars as pl

from shopcast.domain import User
from shopcast.features._itemref import ItemTable
from shopcast.features.profiles import (
    ACTIVITY_WINDOW_DAYS,
    DAY,
    INTENT_TYPES,
    RECENT_KINDS,
    ProfileParams,
    UserState,
    consents,
)

_COLUMNS = ("user_id", "session_id", "item_id", "type", "ts", "quantity", "price", "context")


def _rows(frame: pl.DataFrame, *columns: str) -> Iterator[tuple[Any, ...]]:
    return zip(*(frame[c].to_list() for c in columns), strict=True)


def _events(frame: pl.DataFrame, items: ItemTable, users: Mapping[str, User]) -> pl.DataFrame:
    """The profile's events (with a user, not impressions, consenting users) + item facts."""
    declined = [u for u, record in users.items() if not consents(record)]
    events = frame.select(_COLUMNS).filter(
        pl.col("user_id").is_not_null()
        & (pl.col("type") != "impression")
        & ~pl.col("user_id").is_in(declined)
    )
    return events.join(items.frame(), on="item_id", how="left").with_columns(
        pl.col("categories").fill_null([]),
        pl.coalesce("price", "item_price").alias("paid"),
    )


def _hours(ev: pl.DataFrame, users: Mapping[str, User]) -> pl.DataFrame:
    """``user_id, hour, n``: events per hour of day in each user's time zone."""
    zones = {u: r.timezone for u, r in users.items() if r.timezone is not None}
    ev = ev.select("user_id", "ts").with_columns(
        pl.col("user_id").replace_strict(zones, default=None, return_dtype=pl.String).alias("tz")
    )
    parts = [
        ev.filter(pl.col("tz").is_null()).select(
            "user_id", hour=((pl.col("ts") // 3600).cast(pl.Int64) % 24)
        )
    ]
    for tz in ev["tz"].drop_nulls().unique().sort().to_list():
        stamp = pl.from_epoch(pl.col("ts").floor().cast(pl.Int64), time_unit="s")
        parts.append(
            ev.filter(pl.col("tz") == tz).select(
                "user_id",
                hour=stamp.dt.replace_time_zone("UTC")
                .dt.convert_time_zone(tz)
                .dt.hour()
                .cast(pl.Int64),
            )
        )
    return pl.concat(parts).group_by("user_id", "hour").len("n")


def build_states(
    frame: pl.DataFrame, items: ItemTable, users: Mapping[str, User], p: ProfileParams
) -> dict[str, UserState]:
    """``UserState`` of every user with events in ``frame`` (``EventLog.frame`` columns)."""
    ev = _events(frame, items, users)
    if ev.height == 0:
        return {}
    base = ev.group_by("user_id").agg(
        pl.col("ts").min().alias("first_ts"),
        pl.col("ts").max().alias("last_ts"),
        pl.len().alias("events"),
    )
    states: dict[str, UserState] = {
        u: UserState(first_ts=f, last_ts=last, events=n)
        for u, f, last, n in _rows(base, "user_id", "first_ts", "last_ts", "events")
    }
    for u, kind, n in _rows(ev.group_by("user_id", "type").len("n"), "user_id", "type", "n"):
        states[u].type_counts[kind] = n

    ev = ev.join(base.select("user_id", "last_ts"), on="user_id")
    weight = pl.col("type").replace_strict(p.weights, default=0.0, return_dtype=pl.Float64)
    decayed = weight * pl.lit(2.0).pow((pl.col("ts") - pl.col("last_ts")) / p.half_life_s)
    scored = ev.filter(pl.col("item_id").is_not_null() & (weight > 0)).with_columns(
        decayed.alias("d")
    )
    _affinities(states, scored)

    intents = ev.filter(pl.col("type").is_in(list(INTENT_TYPES)))
    for u, key, n in _rows(
        intents.select("user_id", "categories")
        .explode("categories")
        .drop_nulls()
        .group_by("user_id", "categories")
        .len("n"),
        "user_id",
        "categories",
        "n",
    ):
        states[u].intents[key] = n
    priced = (
        intents.filter(pl.col("paid").is_not_null())
        .group_by("user_id")
        .agg(
            pl.col("paid").sort().alias("prices"),
            (pl.col("paid") / pl.col("ref_price")).drop_nulls().sort().alias("ratios"),
        )
    )
    for u, prices, ratios in _rows(priced, "user_id", "prices", "ratios"):
        states[u].prices, states[u].ratios = prices, ratios
    _purchases(states, intents.filter(pl.col("type") == "purchase"))

    window = ev.filter(pl.col("ts") >= pl.col("last_ts") - ACTIVITY_WINDOW_DAYS * DAY)
    for u, stamps in _rows(window.group_by("user_id").agg(pl.col("ts").sort()), "user_id", "ts"):
        states[u].window = stamps
    for u, hour, n in _rows(_hours(ev, users), "user_id", "hour", "n"):
        states[u].hours[hour] = n
    _devices(states, ev)
    _recent(states, ev, p.recent_items)
    return states


def _affinities(states: dict[str, UserState], scored: pl.DataFrame) -> None:
    for u in scored["user_id"].unique().to_list():
        states[u].anchor = states[u].last_ts
    with_cat = scored.filter(pl.col("categories").list.len() > 0)
    for u, total, n in _rows(
        with_cat.group_by("user_id").agg(pl.col("d").sum().alias("t"), pl.len().alias("n")),
        "user_id",
        "t",
        "n",
    ):
        states[u].category_total, states[u].category_events = total, n
    per_key = (
        with_cat.select("user_id", "categories", "d")
        .explode("categories")
        .group_by("user_id", "categories")
        .agg(pl.col("d").sum())
    )
    for u, key, value in _rows(per_key, "user_id", "categories", "d"):
        states[u].categories[key] = value
    with_brand = scored.filter(pl.col("brand").is_not_null())
    for u, total, n in _rows(
        with_brand.group_by("user_id").agg(pl.col("d").sum().alias("t"), pl.len().alias("n")),
        "user_id",
        "t",
        "n",
    ):
        states[u].brand_total, states[u].brand_events = total, n
    for u, brand, value in _rows(
        with_brand.group_by("user_id", "brand").agg(pl.col("d").sum()), "user_id", "brand", "d"
    ):
        states[u].brands[brand] = value


def _purchases(states: dict[str, UserState], bought: pl.DataFrame) -> None:
    paid_less = (pl.col("price") < pl.col("original_price")).fill_null(False)
    order = pl.coalesce("session_id", pl.format("d:{}", (pl.col("ts") // DAY).cast(pl.Int64)))
    agg = bought.group_by("user_id").agg(
        pl.len().alias("n"),
        (pl.col("paid") * pl.col("quantity").fill_null(1.0)).sum().alias("monetary"),
        (pl.col("discounted").fill_null(False) | paid_less).sum().alias("discounted"),
        order.unique().alias("orders"),
        pl.col("ts").max().alias("last"),
    )
    for u, n, monetary, discounted, orders, last in _rows(
        agg, "user_id", "n", "monetary", "discounted", "orders", "last"
    ):
        s = states[u]
        s.purchases, s.monetary, s.discounted = n, monetary, discounted
        s.orders, s.last_purchase_ts = set(orders), last


def _devices(states: dict[str, UserState], ev: pl.DataFrame) -> None:
    # Context is compact JSON of scalars: '"device":"' marks a string value.
    has = ev.filter(pl.col("context").str.contains('"device":"', literal=True))
    devices = (
        has.select("user_id", device=pl.col("context").str.json_path_match("$.device"))
        .filter(pl.col("device").is_not_null() & (pl.col("device") != ""))
        .group_by("user_id", "device")
        .len("n")
    )
    for u, device, n in _rows(devices, "user_id", "device", "n"):
        states[u].devices[device] = n


def _recent(states: dict[str, UserState], ev: pl.DataFrame, limit: int) -> None:
    last = (
        ev.filter(pl.col("type").is_in(list(RECENT_KINDS)) & pl.col("item_id").is_not_null())
        .group_by("user_id", "type", "item_id")
        .agg(pl.col("ts").max())
        .sort(["user_id", "type", "ts", "item_id"], descending=[False, False, True, True])
        .group_by("user_id", "type", maintain_order=True)
        .head(limit)
    )
    for u, kind, item, ts in _rows(last, "user_id", "type", "item_id", "ts"):
        states[u].recent[kind][item] = ts
