"""The vectorized simulated shop (SYNTHETIC) used at P4 scale: the same shopper model as
``simulate_shop``, chunk by chunk."""

from __future__ import annotations

import itertools

import polars as pl
import pytest

from shopcast.simulate import (
    CATEGORIES,
    EVENTS_PER_SESSION,
    simulate_event_chunks,
    simulate_shop,
    simulated_items,
)


def events(**kw: int) -> pl.DataFrame:
    args = {"n_users": 500, "n_items": 400, "n_events": 20_000, "seed": 3, **kw}
    return pl.concat(list(simulate_event_chunks(**args)))


def test_catalog_is_simulate_shops() -> None:
    assert simulated_items(50, seed=9) == simulate_shop(n_users=3, n_items=50, seed=9).items


def test_same_seed_same_events_whatever_the_chunking() -> None:
    one = events(chunk_sessions=97)
    assert one.equals(events(chunk_sessions=97))
    assert not one.equals(events(seed=4))
    chunks = list(simulate_event_chunks(n_users=500, n_items=400, n_events=20_000, seed=3,
                                        chunk_sessions=500))  # fmt: skip
    assert len(chunks) > 3
    users = [set(c["user_id"].unique().to_list()) for c in chunks]
    assert all(not (a & b) for a, b in itertools.pairwise(users))  # whole users


def test_the_shopper_model() -> None:
    df = events(n_users=2000, n_items=800, n_events=60_000)
    assert abs(df.height - 60_000) < 0.03 * 60_000
    assert df["user_id"].n_unique() == 2000  # every user has a session
    sessions = df["session_id"].n_unique()
    assert df.height / sessions == pytest.approx(EVENTS_PER_SESSION, rel=0.03)
    kinds = dict(df.group_by("type").len().iter_rows())
    assert kinds["add_to_cart"] / sessions == pytest.approx(0.5, abs=0.03)
    assert kinds["purchase"] / kinds["add_to_cart"] == pytest.approx(0.6, abs=0.04)
    # time order within a user, sessions in order
    assert df.select((pl.col("timestamp").diff().over("user_id") < 0).sum()).item() == 0
    # purchases carry the catalog price; an order follows the cart of the same item
    prices = {i.item_id: i.price for i in simulated_items(800, seed=3)}
    bought = df.filter(pl.col("type") == "purchase")
    assert all(prices[i] == p for i, p in bought.select("item_id", "price").iter_rows())
    assert bought["quantity"].to_list() == [1.0] * bought.height
    # sessions keep the loop version's structure: share of a session's views in the
    # anchor's category (its collection spans every category), favourite category
    loop = simulate_shop(n_users=800, n_items=800, seed=3).events.rename({"timestamp": "t"})
    assert same_category(df) == pytest.approx(same_category(loop), abs=0.02)


def same_category(df: pl.DataFrame) -> float:
    n_cat = len(CATEGORIES)
    cat = df.with_columns(c=pl.col("item_id").str.slice(4).cast(pl.Int64) % n_cat)
    views = cat.filter(pl.col("type") == "view")
    per_session = views.group_by("session_id").agg(same=(pl.col("c") == pl.col("c").first()).mean())
    return float(per_session["same"].mean())  # type: ignore[arg-type]
