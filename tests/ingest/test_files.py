"""Reading CSV / CSV.gz / JSONL / Parquet files with mappings. Data here is SYNTHETIC."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from shopcast.errors import NotFoundError, ValidationError
from shopcast.ingest.bulk import clean_events
from shopcast.ingest.files import detect_format, read_events, read_items, read_users

ORDERS_CSV = """\
CustomerID,StockCode,InvoiceDate,Qty,Note
007,A1,2011-01-02 10:00:00,3,first
008,A2,2011-01-02 10:05:00,0,zero quantity
,A3,2011-01-02 10:06:00,1,no customer
009, A4 ,1293962400,2,epoch seconds
"""
ORDERS_MAP = {
    "CustomerID": "user_id",
    "StockCode": "item_id",
    "InvoiceDate": "timestamp",
    "Qty": "quantity",
    "Note": "",
}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["orders.csv", "orders.csv.gz"])
def test_csv_events_with_mapping_and_constant(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    data = ORDERS_CSV.encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    raw = read_events(path, mapping=ORDERS_MAP, constants={"type": "purchase"})
    assert raw.columns == ["user_id", "item_id", "timestamp", "quantity", "type"]
    result = clean_events(raw)
    assert result.frame["user_id"].to_list() == ["007", "009"]  # text stays text
    assert result.frame["item_id"].to_list() == ["A1", "A4"]
    assert result.frame["ts"].to_list() == [1293962400.0, 1293962400.0]
    assert result.frame["quantity"].to_list() == [3.0, 2.0]
    assert result.rejected == {
        "quantity: must be greater than 0": 1,
        "user_id: one of user_id or session_id is required": 1,
    }


def test_jsonl_events_gather_context(tmp_path: Path) -> None:
    lines = [
        {"uid": 1, "type": "view", "item": "x", "ts": 1e9, "page": "home"},
        {"uid": "a", "type": "click", "item": "y", "ts": 1e9, "pos": 2},
    ]
    path = write(tmp_path / "ev.jsonl", "\n".join(json.dumps(x) for x in lines))
    mapping = {
        "uid": "user_id",
        "item": "item_id",
        "ts": "timestamp",
        "page": "context.page",
        "pos": "context.position",
    }
    result = clean_events(read_events(path, mapping=mapping))
    assert result.frame["user_id"].to_list() == ["1", "a"]
    assert [json.loads(c) for c in result.frame["context"]] == [{"page": "home"}, {"position": 2}]


def test_jsonl_nested_context_object(tmp_path: Path) -> None:
    lines = [
        {"type": "view", "session_id": "s", "item_id": "x", "context": {"page": "home"}},
        {"type": "view", "session_id": "s", "item_id": "y", "context": {"scene": "cart"}},
    ]
    path = write(tmp_path / "ev.ndjson", "\n".join(json.dumps(x) for x in lines))
    result = clean_events(read_events(path))
    assert [json.loads(c) for c in result.frame["context"]] == [{"page": "home"}, {"scene": "cart"}]


def test_parquet_items_with_rejections(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    pl.DataFrame(
        {
            "sku": ["a", "b", "c", " "],
            "name": ["Red mug", "Blue mug", "Broken", "Nameless"],
            "category": ["Home > Kitchen", "Home > Kitchen", None, None],
            "price": [3.5, 4.0, -1.0, 2.0],
            "color": ["red", "blue", None, None],
        }
    ).write_parquet(path)
    result = read_items(
        path, mapping={"sku": "item_id", "name": "title", "color": "attributes.color"}
    )
    assert [i.item_id for i in result.records] == ["a", "b"]
    assert result.records[0].category == ["Home", "Kitchen"]
    assert result.records[0].attributes == {"color": "red"}
    assert result.rejected == {
        "item_id: must not be empty": 1,
        "price: Input should be greater than or equal to 0": 1,
    }
    assert result.rows_read == 4


def test_csv_users(tmp_path: Path) -> None:
    path = write(
        tmp_path / "users.csv",
        "id,age,country,tz,tier\nu1,34,UK,Europe/London,gold\nu2,abc,FR,,\nu3,20,DE,Mars/Base,\n",
    )
    result = read_users(
        path,
        mapping={"id": "user_id", "country": "region", "tz": "timezone", "tier": "attributes.tier"},
    )
    assert [(u.user_id, u.age, u.region, u.attributes) for u in result.records] == [
        ("u1", 34, "UK", {"tier": "gold"})
    ]
    assert set(result.rejected) == {
        "age: Input should be a valid integer, unable to parse string as an integer",
        "timezone: 'Mars/Base' is not an IANA time zone (e.g. 'Europe/London')",
    }


def test_format_detection() -> None:
    assert detect_format(Path("a.CSV.gz")) == "csv"
    assert detect_format(Path("a.ndjson")) == "jsonl"
    assert detect_format(Path("a.data"), "parquet") == "parquet"
    with pytest.raises(ValidationError, match="cannot tell the format"):
        detect_format(Path("a.data"))
    with pytest.raises(ValidationError, match="unknown format 'xml'"):
        detect_format(Path("a.csv"), "xml")


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "ev.csv", "who,what\nu,view\n")
    with pytest.raises(NotFoundError, match="no such file"):
        read_events(tmp_path / "missing.csv")
    with pytest.raises(ValidationError, match="'nope' not in the file; its columns are: who, what"):
        read_events(path, mapping={"nope": "user_id"})
    with pytest.raises(ValidationError, match="'who' are not fields"):
        read_events(path, mapping={"what": "type"})
    with pytest.raises(ValidationError, match="'type' already exist"):
        read_events(path, mapping={"who": "user_id", "what": "type"}, constants={"type": "x"})
    with pytest.raises(ValidationError, match="cannot read"):
        read_events(write(tmp_path / "bad.parquet", "not parquet"))
    with pytest.raises(ValidationError, match="unknown event column"):
        clean_events(pl.DataFrame({"type": ["view"], "who": ["u"]}))
    with pytest.raises(ValidationError, match="no 'type' column"):
        clean_events(pl.DataFrame({"user_id": ["u"]}))
