"""Item features on the REAL shared datasets (skipped when the files are absent).

Each figure is checked against an independent computation on the raw data.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl
import pytest

from shopcast.features import ContentSimilarity, ItemFeatures, duplicate_groups
from shopcast.ingest.datasets import DATASETS, DatasetFrames, load_dataset

pytestmark = pytest.mark.dataset


def load(name: str, data_path: Path) -> DatasetFrames:
    if not (data_path / DATASETS[name].folder).is_dir():
        pytest.skip(f"{name} not under {data_path}")
    return load_dataset(name, data_path=data_path)


def retail_duplicates_by_hand(folder: Path) -> set[frozenset[str]]:
    """Most frequent description per StockCode (ties: smallest) -> lower case, non
    alphanumerics to one space -> codes sharing it. Straight from the parquet file."""
    raw = pl.read_parquet(folder / "Online_Retail.parquet", columns=["StockCode", "Description"])
    pairs = raw.select(
        pl.col("StockCode").str.strip_chars(), pl.col("Description").str.strip_chars()
    ).filter(pl.col("Description").is_not_null())
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for code, text in pairs.iter_rows():
        if text and text.lower() != "nan":  # the converter wrote missing text as "nan"
            counts[code][text] += 1
    by_key: dict[str, set[str]] = defaultdict(set)
    for code, texts in counts.items():
        top = min(texts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        key = re.sub(r"[\W_]+", " ", top.lower()).strip()
        if key:
            by_key[key].add(code)
    return {frozenset(codes) for codes in by_key.values() if len(codes) > 1}


def test_online_retail_duplicate_products(data_path: Path) -> None:
    data = load("online-retail", data_path)
    assert len(data.items) == 4070
    groups = duplicate_groups(data.items)
    found = {frozenset(ids) for ids in groups["item_ids"].to_list()}
    assert found == retail_duplicates_by_hand(data_path / DATASETS["online-retail"].folder)
    assert (groups.height, int(groups["n"].sum())) == (134, 284)
    # most are one product whose code differs only in letter case ("15056P" / "15056p")
    case_only = sum(len({i.upper() for i in ids}) == 1 for ids in found)
    assert case_only == 102
    features = ItemFeatures().fit(data.items)
    report = features.report()
    assert (report["duplicate_groups"], report["items_in_duplicate_groups"]) == (134, 284)
    assert report["missing"]["title"] == 112  # codes seen only without a description
    assert report["missing"]["price"] == 149  # codes never sold at a positive price


def test_rees46_prices_within_category_code(data_path: Path) -> None:
    data = load("rees46", data_path)
    table = ItemFeatures(min_group_size=5).fit(data.items).transform(data.items)
    # by hand: a category's prices are those of its whole subtree ("apparel.shoes" holds
    # "apparel.shoes.sandals" too); items whose own category has >= 5 are compared there
    subtree: dict[str, list[float]] = defaultdict(list)
    for item in data.items:
        for depth in range(1, len(item.category) + 1):
            subtree[" > ".join(item.category[:depth])].append(float(item.price or 0.0))
    expected: dict[str, tuple[int, float, float]] = {}
    for item in data.items:
        prices = subtree.get(" > ".join(item.category), [])
        if item.category and len(prices) >= 5:
            p, n = float(item.price or 0.0), len(prices)
            std = statistics.pstdev(prices)
            z = (p - statistics.fmean(prices)) / std if std > 0 else 0.0
            below, equal = sum(x < p for x in prices), sum(x == p for x in prices)
            expected[item.item_id] = (n, z, (below + equal / 2) / n)
    at_leaf = table.filter(pl.col("price_group") == pl.col("category_path"))
    assert set(at_leaf["item_id"]) == set(expected) and len(expected) == 3528
    for item_id, n, z, pct in at_leaf.select(
        "item_id", "price_group_size", "price_z", "price_pct"
    ).iter_rows():
        assert (n, z, pct) == pytest.approx(expected[item_id], abs=1e-9)
    levels = table.group_by("price_group_level").len().sort("price_group_level")
    # 2,901 items have no category_code; 8 more sit under a root with < 5 priced items
    assert levels.rows() == [(0, 2909), (1, 36), (2, 1611), (3, 1937)]
    assert table["category_depth"].eq(0).sum() == 2901


def test_online_retail_content_neighbours(data_path: Path) -> None:
    data = load("online-retail", data_path)
    sim = ContentSimilarity().fit(data.items)
    heart = sim.neighbors("85123A", 5)  # WHITE HANGING HEART T-LIGHT HOLDER
    titles = {i.item_id: i.title for i in data.items}
    assert all("HEART" in (titles[i] or "") for i, _ in heart)
    assert all("T-LIGHT" in (titles[i] or "") for i, _ in heart[:2])
