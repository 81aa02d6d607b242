"""User profiles on the REAL shared datasets (skipped when the files are absent).

Each asserted figure is recomputed here with polars straight from the raw files, not
through the importer. ``now`` is the log's last event time (historical logs).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from shopcast.config import Settings
from shopcast.features.profile_index import ProfileIndex
from shopcast.ingest.datasets import DATASETS, ML_GENRES
from shopcast.ingest.importer import import_dataset
from shopcast.storage import Store, open_store

pytestmark = pytest.mark.dataset

HALF_LIFE_S = 30 * 86_400.0  # ProfileSettings default
WEIGHTS = {"pv": 1.0, "cart": 3.0, "fav": 2.0, "buy": 5.0}  # event_weights defaults


def folder(name: str, data_path: Path) -> Path:
    path = data_path / DATASETS[name].folder
    if not path.is_dir():
        pytest.skip(f"{name} not under {data_path}")
    return path


SETTINGS = Settings(environment="test", profiles={"reference_time": "log"})


def imported(name: str, data_path: Path) -> Iterator[Store]:
    folder(name, data_path)
    store = open_store("memory://")
    import_dataset(store, name, data_path=data_path)
    yield store
    store.close()


@pytest.fixture(scope="module")
def taobao_store(data_path: Path) -> Iterator[Store]:
    yield from imported("taobao", data_path)


@pytest.fixture(scope="module")
def rees46_store(data_path: Path) -> Iterator[Store]:
    yield from imported("rees46", data_path)


@pytest.fixture(scope="module")
def movielens(data_path: Path) -> Iterator[tuple[Store, ProfileIndex]]:
    for store in imported("movielens-100k", data_path):
        yield store, ProfileIndex.from_store(store, SETTINGS)


@pytest.fixture(scope="module")
def retail(data_path: Path) -> Iterator[tuple[Store, ProfileIndex]]:
    for store in imported("online-retail", data_path):
        yield store, ProfileIndex.from_store(store, SETTINGS)


@pytest.fixture(scope="module")
def taobao(taobao_store: Store) -> tuple[Store, ProfileIndex]:
    return taobao_store, ProfileIndex.from_store(taobao_store, SETTINGS)


def test_movielens_demographics_and_genre_affinities(
    movielens: tuple[Store, ProfileIndex], data_path: Path
) -> None:
    _, index = movielens
    path = folder("movielens-100k", data_path)
    ratings = pl.read_csv(
        path / "u.data", separator="\t", has_header=False, new_columns=["u", "i", "r", "ts"]
    )
    items = pl.read_csv(
        path / "u.item",
        separator="|",
        has_header=False,
        encoding="latin-1",
        new_columns=["i", "title", "date", "video", "url", *ML_GENRES],
    )
    now = ratings["ts"].max()
    mine = ratings.filter(pl.col("u") == 1).join(items, on="i")
    decay = pl.lit(2.0).pow((pl.col("ts") - now) / HALF_LIFE_S)  # rate weight cancels out
    has_genre = pl.sum_horizontal(*ML_GENRES) > 0
    total = mine.filter(has_genre).select(decay.sum()).item()
    shares = {g: mine.filter(pl.col(g) == 1).select(decay.sum()).item() / total for g in ML_GENRES}
    top = max(shares, key=lambda g: shares[g])

    card = index.card("1")
    d = card.demographics
    assert (d.age, d.age_band, d.gender, d.occupation, d.region) == (
        24, "18-24", "M", "technician", "85711",
    )  # fmt: skip
    b = card.behaviour
    assert b is not None
    assert (top, b.categories[0].key) == ("Drama", "Drama")
    assert b.categories[0].share == pytest.approx(shares["Drama"], rel=1e-9)
    assert b.categories[0].share == pytest.approx(0.44502, abs=1e-5)
    assert {a.key: a.share for a in b.categories[:5]} == pytest.approx(
        {a.key: shares[a.key] for a in b.categories[:5]}, rel=1e-9
    )
    assert b.funnel.views == 0 and b.activity.events == mine.height == 272


def test_online_retail_spend_rfm_lifecycle_country(
    retail: tuple[Store, ProfileIndex], data_path: Path
) -> None:
    _, index = retail
    raw = pl.read_parquet(folder("online-retail", data_path) / "Online_Retail.parquet")
    sales = raw.filter(
        pl.col("InvoiceNo").str.contains(r"^[0-9]+$")  # cancellations (C…) dropped
        & (pl.col("Quantity") > 0)
        & (pl.col("UnitPrice") >= 0)
        & pl.col("StockCode").is_not_null()
    ).unique()  # a line repeated verbatim is one purchase
    now = sales["InvoiceDate"].max()

    def by_hand(customer: float) -> tuple[float, int, float]:
        mine = sales.filter(pl.col("CustomerID") == customer)
        monetary = mine.select((pl.col("Quantity") * pl.col("UnitPrice")).sum()).item()
        recency = (now - mine["InvoiceDate"].max()).total_seconds() / 86_400  # type: ignore[operator]
        return monetary, mine["InvoiceNo"].n_unique(), recency

    monetary, frequency, recency = by_hand(12346.0)
    assert (monetary, frequency) == (pytest.approx(77183.6), 1)  # its C-invoice is dropped
    card = index.card("12346")
    b = card.behaviour
    assert b is not None and card.demographics.region == "United Kingdom"
    assert b.rfm.monetary == pytest.approx(monetary, rel=1e-12)
    assert (b.rfm.frequency, b.rfm.recency_days) == (1, pytest.approx(recency))
    assert b.rfm.recency_days == pytest.approx(325.117, abs=1e-3)
    assert b.activity.lifecycle == "churned"
    assert (b.rfm.r_score, b.rfm.f_score, b.rfm.m_score) == (1, 1, 5)
    assert "big spender" in {t.name for t in card.tags}

    monetary, frequency, recency = by_hand(12347.0)
    iceland = index.card("12347")
    b = iceland.behaviour
    assert b is not None and iceland.demographics.region == "Iceland"
    assert (b.rfm.monetary, b.rfm.frequency) == (pytest.approx(monetary, rel=1e-12), frequency)
    assert (round(monetary, 2), frequency) == (4310.0, 7)
    assert b.rfm.recency_days == pytest.approx(recency)
    assert b.activity.lifecycle == "active"
    assert len(index.segments()) == 8


def test_taobao_category_affinities_and_funnel(
    taobao: tuple[Store, ProfileIndex], data_path: Path
) -> None:
    _, index = taobao
    raw = pl.read_csv(
        folder("taobao", data_path) / "UserBehavior_head_814users.csv.gz",
        has_header=False,
        new_columns=["u", "i", "c", "b", "ts"],
        schema_overrides={"u": pl.String, "i": pl.String, "c": pl.String},
    )
    totals = {k: (raw["b"] == k).sum() for k in ("pv", "cart", "buy")}
    funnels = [index.profile(u).behaviour for u in index.user_ids()]
    assert sum(f.funnel.views for f in funnels if f) == totals["pv"] == 75_693
    assert sum(f.funnel.carts for f in funnels if f) == totals["cart"] == 4_494
    assert sum(f.funnel.purchases for f in funnels if f) == totals["buy"] == 1_749

    user = raw.filter(pl.col("u") == "1000488")
    card = index.card("1000488")
    b = card.behaviour
    assert b is not None
    f = b.funnel
    assert (f.views, f.carts, f.purchases) == (181, 14, 19)
    assert (f.views, f.carts, f.purchases) == tuple((user["b"] == k).sum() for k in totals)
    assert f.cart_to_purchase == pytest.approx(19 / 14)
    # category of an item = its latest category in the log (as the loader does)
    latest = raw.with_row_index().sort("ts", "index").group_by("i").last().select("i", "c")
    now = raw["ts"].max()
    weight = pl.col("b").replace_strict(WEIGHTS, return_dtype=pl.Float64)
    decayed = (
        user.drop("c")
        .join(latest, on="i")
        .with_columns(d=weight * pl.lit(2.0).pow((pl.col("ts") - now) / HALF_LIFE_S))
    )
    per_cat = decayed.group_by("c").agg(pl.col("d").sum()).sort("d", descending=True)
    top_cat, top_d = per_cat.row(0)
    assert b.categories[0].key == top_cat
    assert b.categories[0].share == pytest.approx(top_d / decayed["d"].sum(), rel=1e-9)
    assert (
        b.categories[0].intents
        == decayed.filter((pl.col("c") == top_cat) & pl.col("b").is_in(["cart", "buy"])).height
    )


@pytest.mark.parametrize(("name", "rows"), [("rees46", 17_429), ("taobao", 20_000)])
def test_incremental_equals_batch_on_real_data(
    name: str, rows: int, request: pytest.FixtureRequest
) -> None:
    """Replaying a slice of the log event by event, in shuffled order, gives the batch
    profiles (REES46: all of it, with prices, brands and sessions; Taobao: 20,000 events).
    RFM scores, fitted on the profiles afterwards, are covered by the synthetic test."""
    store: Store = request.getfixturevalue(f"{name}_store")
    frame = store.events.frame().head(rows)
    part = open_store("memory://")
    part.events.append_frame(frame.drop("seq"))
    events = [e for _, e in part.events.scan()]
    random.Random(0).shuffle(events)
    items, users = list(store.items.scan()), list(store.users.scan())
    batch = ProfileIndex(SETTINGS)
    batch.load(frame, items, users, refit=False)
    incremental = ProfileIndex(SETTINGS)
    incremental.load(frame.head(0), items, users, refit=False)
    incremental.observe(events)
    assert incremental.now() == batch.now()
    assert sorted(incremental.states) == sorted(batch.states)
    assert len(batch.states) > 150
    for uid in batch.states:
        one, other = incremental.profile(uid).model_dump(), batch.profile(uid).model_dump()
        assert_close(one, other, uid)


def assert_close(a: Any, b: Any, path: str) -> None:
    """Equal, floats within 1e-9 (relative)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)
