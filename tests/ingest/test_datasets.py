"""Dataset loaders on tiny SYNTHETIC files shaped like the originals (the real files
are tested in ``test_datasets_real.py``)."""

from __future__ import annotations

import gzip
import importlib.util
import json
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from shopcast.errors import (
    DatasetNotFoundError,
    MissingDependencyError,
    NotFoundError,
    ValidationError,
)
from shopcast.ingest.bulk import clean_events
from shopcast.ingest.datasets import AMAZON_BASE_TS, DATASETS, load_dataset

RETAIL_CSV = """\
InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,United Kingdom
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,United Kingdom
536366,85123A,,2,2010-12-01 08:28:00,2.75,,United Kingdom
C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527,United Kingdom
A563185,B,Adjust bad debt,1,2011-08-12 14:50:00,11062.06,,United Kingdom
536414,22139,,0,2010-12-01 11:52:00,0.0,,United Kingdom
536367,22745,POPPY'S PLAYHOUSE BEDROOM,6,2010-12-01 08:34:00,2.1,13047,France
"""


def test_movielens(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t5\t891717742\n1\t20\t1\t1\n")
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    flags = "|".join(["0"] * 19)
    (tmp_path / "u.item").write_bytes(
        f"10|Café (1995)|01-Jan-1995||http://imdb/x|0|1|{flags[4:]}\n"
        f"20|Old (1950)|01-Jan-1950|||{flags}\n".encode("latin-1")
    )
    frames = load_dataset("movielens-100k", path=tmp_path)
    assert frames.report["items_rejected"] == 0
    clean = clean_events(frames.events)
    assert clean.frame["event_id"].to_list() == ["ml100k:1:10", "ml100k:2:10", "ml100k:1:20"]
    assert clean.frame["value"].to_list() == [4.0, 5.0, 1.0]
    assert clean.frame["type"].unique().to_list() == ["rate"]
    cafe, old = frames.items
    assert (cafe.title, cafe.created_at) == ("Café (1995)", 788918400.0)
    assert cafe.attributes["genres"] == ["Action"]
    assert (old.created_at, old.attributes["release_date"]) == (None, "01-Jan-1950")
    first = frames.users[0]
    (tmp_path / "u.user").write_text("3|24|M\n")
    with pytest.raises(ValidationError, match=r"u\.user:1: 3 fields, expected 5"):
        load_dataset("movielens-100k", path=tmp_path)
    assert (first.user_id, first.age, first.occupation, first.region) == (
        "1", 24, "technician", "85711"
    )  # fmt: skip


def test_online_retail_csv(tmp_path: Path) -> None:
    (tmp_path / "online_retail.csv.gz").write_bytes(gzip.compress(RETAIL_CSV.encode()))
    frames = load_dataset("online-retail", data_path=tmp_path.parent, path=tmp_path)
    assert frames.skipped == {
        "InvoiceNo: adjustment, not a sale": 1,
        "InvoiceNo: cancellation (C…)": 1,
        "Quantity: not positive": 1,
    }
    assert frames.report["rows_read"] == 7
    assert frames.report["duplicate_rows"] == frames.report["duplicate_purchases"] == 1
    assert frames.report["anonymous_purchases"] == 1
    clean = clean_events(frames.events)
    first = clean.frame.row(0, named=True)
    assert first["user_id"] == "17850" and first["session_id"] == "invoice:536365"
    assert (first["quantity"], first["price"], first["ts"]) == (6.0, 2.55, 1291191960.0)
    anonymous = clean.frame.filter(pl.col("user_id").is_null())
    assert anonymous["session_id"].to_list() == ["invoice:536366"]
    items = {i.item_id: i for i in frames.items}
    assert set(items) == {"85123A", "D", "B", "22139", "22745"}
    assert items["85123A"].title == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert items["85123A"].price == pytest.approx(2.55)  # median of 2.55, 2.55, 2.75
    assert items["22139"].title is None
    assert {u.user_id: u.region for u in frames.users} == {
        "17850": "United Kingdom",
        "14527": "United Kingdom",
        "13047": "France",
    }


def test_online_retail_ii_layout_gives_the_same_events(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "online_retail.csv.gz").write_bytes(gzip.compress(RETAIL_CSV.encode()))
    expected = load_dataset("online-retail", path=tmp_path / "a").events
    ii = pl.read_csv(RETAIL_CSV.encode(), schema_overrides={"CustomerID": pl.Float64}).select(
        pl.col("InvoiceNo").alias("Invoice"),
        "StockCode",
        pl.col("Description").fill_null("nan"),
        "Quantity",
        pl.col("InvoiceDate").str.to_datetime("%Y-%m-%d %H:%M:%S"),
        pl.col("UnitPrice").alias("Price"),
        pl.col("CustomerID").alias("Customer ID"),
        "Country",
    )
    path = tmp_path / "ii.parquet"
    ii.write_parquet(path)
    got = load_dataset("online-retail", path=path).events
    assert got.to_dicts() == expected.to_dicts()


@pytest.mark.skipif(importlib.util.find_spec("openpyxl") is not None, reason="openpyxl installed")
def test_online_retail_xlsx_needs_openpyxl(tmp_path: Path) -> None:
    path = tmp_path / "Online Retail.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(MissingDependencyError, match="openpyxl"):
        load_dataset("online-retail", path=path)


def test_amazon_s3rec_named_pair(tmp_path: Path) -> None:
    (tmp_path / "Toys.txt").write_text("1 5 6 7\n2 6\n")
    (tmp_path / "Toys_item2attributes.json").write_text(json.dumps({"5": [1, 2], "8": [3]}))
    frames = load_dataset("amazon-s3rec", path=tmp_path / "Toys.txt")
    clean = clean_events(frames.events)
    assert clean.frame["event_id"].to_list()[:2] == ["amazon:Toys:1:0", "amazon:Toys:1:1"]
    assert clean.frame["type"].unique().to_list() == ["purchase"]
    ts = clean.frame.filter(pl.col("user_id") == "1")["ts"].to_list()
    assert ts == [AMAZON_BASE_TS, AMAZON_BASE_TS + 86400, AMAZON_BASE_TS + 2 * 86400]
    items = {i.item_id: i.attributes["attribute_ids"] for i in frames.items}
    assert items == {"5": [1, 2], "6": [], "7": [], "8": [3]}
    assert frames.report["users"] == 2 and frames.report["rows_read"] == 4


def test_taobao(tmp_path: Path) -> None:
    (tmp_path / "UserBehavior.csv").write_text(
        "1,100,7,pv,1511544070\n1,100,7,cart,1511544080\n2,200,8,fav,1511544090\n"
        "2,200,9,buy,1511544099\n"
    )
    frames = load_dataset("taobao", path=tmp_path)
    clean = clean_events(frames.events)
    assert clean.frame["type"].to_list() == ["view", "add_to_cart", "favorite", "purchase"]
    assert clean.frame["event_id"][0] == "taobao:1:100:pv:1511544070"
    assert {i.item_id: i.category for i in frames.items} == {"100": ["7"], "200": ["9"]}
    assert [u.user_id for u in frames.users] == ["1", "2"]


def test_rees46(tmp_path: Path) -> None:
    header = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
    row = "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,s1"
    (tmp_path / "2019-Oct.csv").write_text(
        f"{header}user_session\n{row}\n{row}\n"
        "2019-10-01 00:00:05 UTC,cart,3900821,2053013552326770905,"
        "appliances.environment.water_heater,aqua,33.20,554748717,s2\n"
    )
    frames = load_dataset("rees46", path=tmp_path)
    clean = clean_events(frames.events)
    assert clean.frame["type"].to_list() == ["view", "view", "add_to_cart"]
    assert clean.frame["ts"][0] == datetime.fromisoformat("2019-10-01T00:00:00+00:00").timestamp()
    assert clean.frame["event_id"].n_unique() == 2  # the repeated line is a duplicate
    heater = next(i for i in frames.items if i.item_id == "3900821")
    assert heater.category == ["appliances", "environment", "water_heater"]
    assert (heater.brand, heater.price) == ("aqua", 33.2)
    assert frames.report["duplicate_rows"] == 1


def test_unknown_and_missing_datasets(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="unknown dataset 'nope'; known: movielens-100k"):
        load_dataset("nope")
    with pytest.raises(DatasetNotFoundError, match=r"files\.grouplens\.org") as missing:
        load_dataset("movielens-100k", data_path=tmp_path)
    assert str(tmp_path / "movielens-100k") in missing.value.message
    (tmp_path / "taobao-userbehavior-sample").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"UserBehavior_head_814users\.csv\.gz"):
        load_dataset("taobao", data_path=tmp_path)
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValidationError, match="not an Online Retail file: no column"):
        load_dataset("online-retail", path=tmp_path / "x.csv")
    assert set(DATASETS) == {"movielens-100k", "online-retail", "amazon-s3rec", "taobao", "rees46"}
