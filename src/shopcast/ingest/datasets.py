"""Loaders of the public datasets: raw event frames plus validated items and users.

Each loader reads one dataset's original files (never downloading anything) and
returns ``DatasetFrames``: ``events`` is a raw frame for ``clean_events``; rows of
the source that are not events (e.g. cancelled orders) are counted in ``skipped``
by reason; ``report`` holds what was measured (rows read, users, items, …).
Event ids are deterministic, so importing a dataset twice stores nothing new.

``load_dataset(name)`` finds the files under ``Settings.data_path / <folder>`` (or
``path``) and raises ``DatasetNotFoundError`` naming the path it looked at and the
official address to download the data from.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from shopcast.config import load_settings
from shopcast.domain import MIN_TS, Item, User
from shopcast.errors import (
    DatasetNotFoundError,
    MissingDependencyError,
    NotFoundError,
    ValidationError,
)
from shopcast.ingest.files import read_table, validate_records

__all__ = [
    "AMAZON_BASE_TS",
    "DATASETS",
    "DatasetFrames",
    "DatasetSpec",
    "load_amazon_s3rec",
    "load_dataset",
    "load_movielens_100k",
    "load_online_retail",
    "load_rees46",
    "load_taobao",
]


@dataclass(frozen=True, slots=True)
class DatasetFrames:
    """A dataset ready to import: raw events, catalog, profiles and measured counts."""

    events: pl.DataFrame
    items: list[Item]
    users: list[User]
    report: dict[str, int]
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """A known dataset: its default folder under the data path and where to get it."""

    name: str
    folder: str
    source: str
    load: Callable[[Path], DatasetFrames]


def _find(path: Path, dataset: str, *names: str) -> Path:
    """``path`` itself when it is a file, else the first of ``names`` inside it."""
    if path.is_file():
        return path
    for name in names:
        if (path / name).is_file():
            return path / name
    raise DatasetNotFoundError(
        f"dataset {dataset!r}: {' or '.join(str(path / n) for n in names)} not found; "
        f"download it from {DATASETS[dataset].source} and put the files in {path} "
        "(or set SHOPCAST_DATA, or pass --path)"
    )


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def _row_ids(df: pl.DataFrame, prefix: str) -> pl.Series:
    """A content hash of each row: equal rows get equal ids (stable across versions)."""
    text = df.select(
        pl.concat_str(
            [pl.col(c).cast(pl.String).fill_null("") for c in df.columns], separator="\x1f"
        ).cast(pl.Binary)
    ).to_series()
    digest = hashlib.blake2b
    hashes = pl.Series([digest(t, digest_size=12).digest() for t in text.to_list()])
    return prefix + hashes.bin.encode("hex")


def _mode(df: pl.DataFrame, key: str, value: str, alias: str) -> pl.DataFrame:
    """The most frequent non-null ``value`` per ``key`` (ties: the smallest)."""
    return (
        df.drop_nulls(value)
        .group_by(key, value)
        .len()
        .sort([key, "len", value], descending=[False, True, False])
        .group_by(key, maintain_order=True)
        .first()
        .select(key, pl.col(value).alias(alias))
    )


# -- MovieLens 100K -----------------------------------------------------------------------

ML_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
)}  # fmt: skip


def _ml_date(text: str) -> float | None:
    """``01-Jan-1995`` as epoch seconds (UTC); None when empty, unreadable or before 1970
    (``created_at`` cannot hold it; the text stays in the ``release_date`` attribute)."""
    m = re.fullmatch(r"(\d{2})-([A-Z][a-z]{2})-(\d{4})", text)
    if not m or m.group(2) not in _MONTHS:
        return None
    day, month, year = int(m.group(1)), _MONTHS[m.group(2)], int(m.group(3))
    ts = datetime(year, month, day, tzinfo=UTC).timestamp()
    return ts if ts >= MIN_TS else None


def _pipe_rows(file: Path, n_fields: int) -> list[list[str]]:
    """The ``|``-separated latin-1 lines of a MovieLens file, each with ``n_fields``."""
    rows = [line.split("|") for line in file.read_text("latin-1").splitlines() if line]
    for number, row in enumerate(rows, 1):
        if len(row) != n_fields:
            raise ValidationError(f"{file}:{number}: {len(row)} fields, expected {n_fields}")
    return rows


def load_movielens_100k(path: Path) -> DatasetFrames:
    """MovieLens 100K: ``u.data`` ratings as ``rate`` events (event id ``ml100k:<u>:<i>``),
    ``u.user`` (age, gender, occupation, zip code as region) and ``u.item`` (latin-1;
    title, release date as ``created_at`` from 1970 on, genres, release date text and
    IMDb URL as attributes)."""
    folder = path.parent if path.is_file() else path
    ratings = pl.read_csv(
        _find(folder, "movielens-100k", "u.data"),
        separator="\t",
        has_header=False,
        schema={"user": pl.String, "item": pl.String, "rating": pl.Float64, "ts": pl.Int64},
    )
    events = ratings.select(
        event_id=pl.format("ml100k:{}:{}", "user", "item"),
        type=pl.lit("rate"),
        user_id="user",
        item_id="item",
        timestamp="ts",
        value="rating",
    )
    user_rows = _pipe_rows(_find(folder, "movielens-100k", "u.user"), 5)
    users = validate_records(
        pl.DataFrame(
            user_rows, schema=["user_id", "age", "gender", "occupation", "region"], orient="row"
        ),
        User,
    )
    item_rows = []
    for f in _pipe_rows(_find(folder, "movielens-100k", "u.item"), 5 + len(ML_GENRES)):
        genres = [g for g, flag in zip(ML_GENRES, f[5:], strict=True) if flag == "1"]
        attributes: dict[str, object] = {"genres": genres}
        for key, text in (("release_date", f[2]), ("imdb_url", f[4])):
            if text:
                attributes[key] = text
        item_rows.append(
            {"item_id": f[0], "title": f[1], "created_at": _ml_date(f[2]), "attributes": attributes}
        )
    items = validate_records(pl.DataFrame(item_rows), Item)
    report = {
        "rows_read": ratings.height,
        "users": len(users.records),
        "items": len(items.records),
        "users_rejected": sum(users.rejected.values()),
        "items_rejected": sum(items.rejected.values()),
    }
    return DatasetFrames(events, items.records, users.records, report)


# -- UCI Online Retail (I and II) --------------------------------------------------------

_RETAIL_II = {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}
_RETAIL_COLUMNS = (
    "InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
    "CustomerID", "Country",
)  # fmt: skip
_RETAIL_DATES = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S")


def _read_retail(file: Path) -> pl.DataFrame:
    """The file as a frame; every sheet of a workbook (Online Retail II has two)."""
    if file.suffix.lower() != ".xlsx":
        return read_table(file)
    if importlib.util.find_spec("openpyxl") is None:
        raise MissingDependencyError("openpyxl", "excel")
    sheets = pl.read_excel(file, sheet_id=0, engine="openpyxl")
    return pl.concat(list(sheets.values()), how="diagonal_relaxed")


def _retail_frame(raw: pl.DataFrame) -> pl.DataFrame:
    """Both layouts to the UCI column names, with one type per column."""
    raw = raw.rename({k: v for k, v in _RETAIL_II.items() if k in raw.columns})
    absent = [c for c in _RETAIL_COLUMNS if c not in raw.columns]
    if absent:
        raise ValidationError(
            f"not an Online Retail file: no column(s) {', '.join(absent)} "
            f"(found: {', '.join(raw.columns)})"
        )

    def text(name: str) -> pl.Expr:
        v = pl.col(name).cast(pl.String).str.strip_chars()
        return pl.when(v != "").then(v)

    date = pl.col("InvoiceDate")
    if raw.schema["InvoiceDate"] == pl.String:
        date = pl.coalesce(date.str.to_datetime(f, strict=False) for f in _RETAIL_DATES)
    description = text("Description")
    return raw.select(
        text("InvoiceNo").alias("InvoiceNo"),
        text("StockCode").alias("StockCode"),
        pl.when(description.str.to_lowercase() != "nan").then(description).alias("Description"),
        pl.col("Quantity").cast(pl.Float64, strict=False).alias("Quantity"),
        date.dt.epoch("s").alias("InvoiceDate"),
        pl.col("UnitPrice").cast(pl.Float64, strict=False).alias("UnitPrice"),
        pl.col("CustomerID")
        .cast(pl.Float64, strict=False)
        .cast(pl.Int64, strict=False)
        .cast(pl.String)
        .alias("CustomerID"),
        text("Country").alias("Country"),
    )


def load_online_retail(path: Path) -> DatasetFrames:
    """UCI Online Retail (or Online Retail II): each sale line is a ``purchase`` with
    quantity and unit price, in the session ``invoice:<InvoiceNo>``; lines without a
    CustomerID are anonymous purchases of that session. Cancellations (invoice ``C…``),
    adjustments (other non-numeric invoices), non-positive quantities and negative
    prices are skipped. The event id hashes the whole line, so duplicated lines are
    duplicates. Invoice times are shop-local (UK) and read as UTC. Items: every
    StockCode, its most frequent description as title, its median sale price; users:
    every CustomerID, their most frequent Country as region."""
    file = _find(
        path,
        "online-retail",
        "Online_Retail.parquet",
        "online_retail.csv.gz",
        "Online Retail.xlsx",
        "online_retail_II.xlsx",
    )
    df = _retail_frame(_read_retail(file))
    df = df.with_columns(_row_ids(df, "retail:").alias("event_id"))
    invoice, quantity, price = pl.col("InvoiceNo"), pl.col("Quantity"), pl.col("UnitPrice")
    checks = [
        (invoice.is_null(), "InvoiceNo: missing"),
        (invoice.str.starts_with("C"), "InvoiceNo: cancellation (C…)"),
        (~invoice.str.contains(r"^[0-9]+$"), "InvoiceNo: adjustment, not a sale"),
        (pl.col("StockCode").is_null(), "StockCode: missing"),
        (quantity.is_null() | (quantity <= 0), "Quantity: not positive"),
        (price.is_null() | (price < 0), "UnitPrice: missing or negative"),
        (pl.col("InvoiceDate").is_null(), "InvoiceDate: not a date"),
    ]
    df = df.with_columns(
        pl.coalesce(pl.when(cond).then(pl.lit(reason)) for cond, reason in checks).alias("skip")
    )
    sales = df.filter(pl.col("skip").is_null())
    events = sales.select(
        "event_id",
        type=pl.lit("purchase"),
        user_id="CustomerID",
        session_id=pl.format("invoice:{}", "InvoiceNo"),
        item_id="StockCode",
        timestamp="InvoiceDate",
        quantity="Quantity",
        price="UnitPrice",
    )
    skipped = df.filter(pl.col("skip").is_not_null()).group_by("skip").len()

    codes = df.select(pl.col("StockCode").drop_nulls().unique(maintain_order=True))
    items = validate_records(
        codes.join(_mode(df, "StockCode", "Description", "title"), on="StockCode", how="left")
        .join(
            sales.filter(price > 0).group_by("StockCode").agg(price.median().alias("price")),
            on="StockCode",
            how="left",
        )
        .rename({"StockCode": "item_id"}),
        Item,
    )
    customers = df.select(pl.col("CustomerID").drop_nulls().unique(maintain_order=True))
    users = validate_records(
        customers.join(
            _mode(df, "CustomerID", "Country", "region"), on="CustomerID", how="left"
        ).rename({"CustomerID": "user_id"}),
        User,
    )
    report = {
        "rows_read": df.height,
        "purchases": events.height,
        "anonymous_purchases": events["user_id"].null_count(),
        "duplicate_rows": df.height - df["event_id"].n_unique(),
        "duplicate_purchases": events.height - events["event_id"].n_unique(),
        "customers": customers.height,
        "stock_codes": codes.height,
        "users_rejected": sum(users.rejected.values()),
        "items_rejected": sum(items.rejected.values()),
    }
    return DatasetFrames(
        events,
        items.records,
        users.records,
        report,
        dict(sorted(zip(skipped["skip"].to_list(), skipped["len"].to_list(), strict=True))),
    )


# -- Amazon (S3-Rec preprocessing) -------------------------------------------------------

#: Synthetic time of an Amazon user's first interaction (2014-01-01 UTC); the k-th is
#: ``AMAZON_BASE_TS + k`` days. Only the order within a user is real.
AMAZON_BASE_TS = 1_388_534_400.0
_DAY = 86_400.0


def load_amazon_s3rec(path: Path) -> DatasetFrames:
    """An S3-Rec Amazon dataset: ``<name>.txt`` (``user item item …``, one user a line,
    in time order) and ``<name>_item2attributes.json``. ``path`` is the folder (name
    ``Beauty``) or the ``.txt`` file. Interactions are ``purchase`` events whose
    timestamps are synthetic (``AMAZON_BASE_TS`` + one day per position, so only the
    order within a user is meaningful); items carry their attribute ids."""
    sequences = _find(path, "amazon-s3rec", "Beauty.txt")
    name = sequences.stem
    attributes_file = _find(sequences.parent, "amazon-s3rec", f"{name}_item2attributes.json")
    user_ids: list[str] = []
    item_ids: list[str] = []
    positions: list[int] = []
    n_users = 0
    for line in sequences.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        n_users += 1
        for k, item in enumerate(parts[1:]):
            user_ids.append(parts[0])
            item_ids.append(item)
            positions.append(k)
    events = pl.DataFrame(
        {"user_id": user_ids, "item_id": item_ids, "k": positions},
        schema={"user_id": pl.String, "item_id": pl.String, "k": pl.Int64},
    ).select(
        event_id=pl.format(f"amazon:{name}:{{}}:{{}}", "user_id", "k"),
        type=pl.lit("purchase"),
        user_id="user_id",
        item_id="item_id",
        timestamp=pl.col("k") * _DAY + AMAZON_BASE_TS,
    )
    item_attributes: dict[str, list[int]] = json.loads(attributes_file.read_text())
    all_items = dict.fromkeys(item_ids) | dict.fromkeys(item_attributes)
    items = validate_records(
        pl.DataFrame(
            [
                {"item_id": i, "attributes": {"attribute_ids": item_attributes.get(i, [])}}
                for i in all_items
            ]
        ),
        Item,
    )
    users = [User(user_id=u) for u in dict.fromkeys(user_ids)]
    report = {
        "rows_read": events.height,
        "users": len(users),
        "items": len(items.records),
        "items_in_sequences": len(dict.fromkeys(item_ids)),
        "items_with_attributes": len(item_attributes),
        "items_rejected": sum(items.rejected.values()),
        "sequences": n_users,
    }
    return DatasetFrames(events, items.records, users, report)


# -- Taobao UserBehavior -----------------------------------------------------------------


def load_taobao(path: Path) -> DatasetFrames:
    """Taobao UserBehavior (headerless ``user_id,item_id,category_id,behavior_type,
    timestamp``): ``pv``/``cart``/``fav``/``buy`` become view/add_to_cart/favorite/
    purchase (the ``Event`` aliases); event id ``taobao:<user>:<item>:<behavior>:<ts>``;
    items carry their (latest) category id."""
    file = _find(
        path,
        "taobao",
        "UserBehavior_head_814users.csv.gz",
        "UserBehavior.csv",
        "UserBehavior.csv.gz",
    )
    raw = pl.read_csv(
        io.BytesIO(_read_bytes(file)),
        has_header=False,
        new_columns=["user_id", "item_id", "category_id", "type", "timestamp"],
        infer_schema=False,
    )
    events = raw.select(
        pl.format("taobao:{}:{}:{}:{}", "user_id", "item_id", "type", "timestamp").alias(
            "event_id"
        ),
        "type",
        "user_id",
        "item_id",
        "timestamp",
    )
    latest = (
        raw.with_row_index("_row")
        .sort(pl.col("timestamp").cast(pl.Int64, strict=False), "_row")
        .group_by("item_id", maintain_order=True)
        .last()
    )
    items = validate_records(
        raw.select(pl.col("item_id").unique(maintain_order=True))
        .join(latest.select("item_id", category=pl.concat_list("category_id")), on="item_id")
        .select("item_id", "category"),
        Item,
    )
    users = [User(user_id=u) for u in raw["user_id"].unique(maintain_order=True).to_list()]
    report = {
        "rows_read": raw.height,
        "users": len(users),
        "items": len(items.records),
        "categories": raw["category_id"].n_unique(),
        "items_rejected": sum(items.rejected.values()),
    }
    return DatasetFrames(events, items.records, users, report)


# -- REES46 ------------------------------------------------------------------------------


def load_rees46(path: Path) -> DatasetFrames:
    """REES46 "eCommerce behavior data" (``event_time,event_type,product_id,category_id,
    category_code,brand,price,user_id,user_session``): view/cart/purchase/
    remove_from_cart events with price, session ``user_session``; the event id hashes
    the whole line (duplicated lines are duplicates). Items: category path from
    ``category_code`` split on ``.``, brand, latest price, category id as attribute."""
    file = _find(path, "rees46", "2019-Oct_head_clean.csv.gz", "2019-Oct.csv", "2019-Oct.csv.gz")
    raw = read_table(file, "csv")
    events = raw.select(
        _row_ids(raw, "rees46:").alias("event_id"),
        type="event_type",
        user_id="user_id",
        session_id="user_session",
        item_id="product_id",
        timestamp="event_time",
        price="price",
    )
    latest = raw.group_by("product_id", maintain_order=True).last()
    items = validate_records(
        latest.select(
            item_id="product_id",
            category=pl.col("category_code").str.split("."),
            brand="brand",
            price="price",
            attributes=pl.struct("category_id"),
        ),
        Item,
    )
    users = [User(user_id=u) for u in raw["user_id"].drop_nulls().unique(maintain_order=True)]
    report = {
        "rows_read": raw.height,
        "users": len(users),
        "items": len(items.records),
        "sessions": raw["user_session"].n_unique(),
        "duplicate_rows": raw.height - events["event_id"].n_unique(),
        "items_rejected": sum(items.rejected.values()),
    }
    return DatasetFrames(events, items.records, users, report)


# -- Registry ----------------------------------------------------------------------------

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "movielens-100k",
            "movielens-100k",
            "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
            load_movielens_100k,
        ),
        DatasetSpec(
            "online-retail",
            "uci-online-retail",
            "https://archive.ics.uci.edu/dataset/352/online+retail",
            load_online_retail,
        ),
        DatasetSpec(
            "amazon-s3rec",
            "amazon-beauty",
            "https://github.com/RUCAIBox/CIKM2020-S3Rec (data/Beauty.txt, "
            "data/Beauty_item2attributes.json)",
            load_amazon_s3rec,
        ),
        DatasetSpec(
            "taobao",
            "taobao-userbehavior-sample",
            "https://tianchi.aliyun.com/dataset/649",
            load_taobao,
        ),
        DatasetSpec(
            "rees46",
            "rees46-sample",
            "https://www.kaggle.com/datasets/mkechinov/ecommerce-behavior-data-from-multi-category-store",
            load_rees46,
        ),
    )
}


def load_dataset(
    name: str, path: Path | str | None = None, data_path: Path | str | None = None
) -> DatasetFrames:
    """Load a known dataset from ``path`` (folder or file), else from
    ``<data_path>/<folder>`` (``data_path`` defaults to ``Settings.data_path``)."""
    spec = DATASETS.get(name)
    if spec is None:
        raise NotFoundError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if path is None:
        root = Path(data_path) if data_path is not None else load_settings().data_path
        path = root / spec.folder
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(
            f"dataset {name!r}: {path} does not exist; download it from {spec.source} "
            "and put the files there (or set SHOPCAST_DATA, or pass --path)"
        )
    return spec.load(path)
