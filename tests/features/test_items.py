"""ItemFeatures on a small SYNTHETIC catalog; every expected value is computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from shopcast.domain import Item
from shopcast.errors import ConfigError, ModelError, NotFittedError
from shopcast.features.items import (
    BASE_COLUMNS,
    ItemFeatures,
    duplicate_groups,
    items_frame,
    normalize_title,
    normalized,
)
from shopcast.models import Vocabulary

RUN = "Shoes > Running"
TRAIL = "Shoes > Trail"


def catalog() -> list[Item]:
    """SYNTHETIC: 5 priced running shoes, 2 trail shoes, 1 book, 1 unpriced, 1 bare item."""
    return [
        Item(item_id="r1", title="Air Zoom Pegasus", brand="Nike", category=RUN, price=10, stock=0),
        Item(item_id="r2", title="air-zoom  PEGASUS!", brand="NIKE", category=RUN, price=20,
             stock=3),
        Item(item_id="r3", title="Air Zoom Pegasus", brand="Adidas", category=RUN, price=30,
             original_price=40, stock=5),
        Item(item_id="r4", title="Gel Nimbus", category=RUN, price=40, original_price=0,
             stock=6),
        Item(item_id="r5", title="Gel Kayano", category=RUN, price=50, original_price=40,
             description="Stable"),
        Item(item_id="t1", title="Speedgoat", category=TRAIL, price=30),
        Item(item_id="t2", title="Cascadia", category=TRAIL, price=100),
        Item(item_id="b1", title="Gel Kayano", category="Books", price=80, brand="Penguin"),
        Item(item_id="u1", title="  ", category="Books > Fiction > Crime > Noir"),
        Item(item_id="x1"),
    ]  # fmt: skip


@pytest.fixture
def fitted() -> tuple[ItemFeatures, pl.DataFrame]:
    features = ItemFeatures(low_stock_threshold=5, min_group_size=5)
    return features, features.fit(catalog()).transform(catalog())


def row(table: pl.DataFrame, item_id: str) -> dict[str, object]:
    return table.filter(pl.col("item_id") == item_id).row(0, named=True)


def test_normalized_titles() -> None:
    assert normalize_title("  Air-Zoom,  PEGASUS! ") == "air zoom pegasus"
    assert normalize_title("T-LIGHT  holder £10") == "t light holder 10"
    assert normalize_title("!!!") is None
    assert normalize_title(None) is None


def test_python_and_polars_normalizations_agree() -> None:
    texts = ["Été  naïve_Café", "ΣΟΦΙΑΣ x² ½", "T-LIGHT £10.00", "  ", "日本 の 茶", "ǅemal Ⅻ"]
    frame = pl.DataFrame({"t": texts}).select(normalized("t").alias("t"))
    assert frame["t"].to_list() == [normalize_title(t) for t in texts]


def test_duplicates_need_same_title_and_brand(fitted: tuple[ItemFeatures, pl.DataFrame]) -> None:
    groups = duplicate_groups(catalog())
    # r1/r2 share title and brand (case and punctuation aside); r3 is another brand,
    # r5 and b1 share a title but not the brand (a missing brand matches only a missing one).
    assert groups.select("item_ids", "n").rows() == [(["r1", "r2"], 2)]
    _, table = fitted
    assert row(table, "r1")["duplicate_group"] == "r1"
    assert row(table, "r2")["duplicate_group"] == "r1"
    assert row(table, "r2")["duplicate_count"] == 2
    assert row(table, "r3")["duplicate_group"] is None
    assert row(table, "r3")["duplicate_count"] == 1
    assert row(table, "u1")["duplicate_group"] is None  # a blank title is no title


def test_new_item_is_a_duplicate_of_the_fitted_catalog(
    fitted: tuple[ItemFeatures, pl.DataFrame],
) -> None:
    features, _ = fitted
    new = Item(item_id="a0", title="AIR ZOOM pegasus", brand="nike")
    out = row(features.transform([new]), "a0")
    assert (out["duplicate_group"], out["duplicate_count"]) == ("a0", 3)
    # r2 renamed: its fresh title wins over the one seen at fit, so r1 is alone again
    renamed = Item(item_id="r2", title="Pegasus Trail", brand="Nike")
    assert row(features.transform([renamed]), "r2")["duplicate_group"] is None


def test_price_within_leaf_category(fitted: tuple[ItemFeatures, pl.DataFrame]) -> None:
    _, table = fitted
    # Shoes > Running: 10 20 30 40 50 -> mean 30, population std sqrt(200)
    std = math.sqrt(200)
    r5 = row(table, "r5")
    assert r5["price_group"] == RUN and r5["price_group_level"] == 2
    assert r5["price_group_size"] == 5
    assert r5["price_z"] == pytest.approx(20 / std)
    assert r5["price_pct"] == pytest.approx(4.5 / 5)  # 4 below, itself half
    assert row(table, "r1")["price_pct"] == pytest.approx(0.5 / 5)
    assert row(table, "r3")["price_z"] == pytest.approx(0.0)
    assert row(table, "r3")["price_pct"] == pytest.approx(0.5)


def test_small_category_falls_back_to_parent_then_global(
    fitted: tuple[ItemFeatures, pl.DataFrame],
) -> None:
    _, table = fitted
    # Shoes > Trail has 2 priced items -> parent "Shoes": 10 20 30 40 50 30 100,
    # mean 40, squared deviations 900+400+100+0+100+100+3600 = 5200 -> std sqrt(5200/7)
    t2 = row(table, "t2")
    assert t2["price_group"] == "Shoes" and t2["price_group_level"] == 1
    assert t2["price_group_size"] == 7
    assert t2["price_z"] == pytest.approx(60 / math.sqrt(5200 / 7))
    assert t2["price_pct"] == pytest.approx(6.5 / 7)
    # Books has 1 priced item -> the whole catalog: the 8 prices above + 80,
    # mean 45, squared deviations sum 6600 -> std sqrt(6600/8)
    b1 = row(table, "b1")
    assert b1["price_group"] == "" and b1["price_group_level"] == 0
    assert b1["price_group_size"] == 8
    assert b1["price_z"] == pytest.approx(35 / math.sqrt(825))
    assert b1["price_pct"] == pytest.approx(6.5 / 8)
    u1 = row(table, "u1")  # no price: nothing to normalize
    assert (u1["price_group"], u1["price_z"], u1["price_pct"]) == (None, None, None)


def test_unseen_item_is_compared_with_the_fitted_group(
    fitted: tuple[ItemFeatures, pl.DataFrame],
) -> None:
    features, _ = fitted
    new = row(features.transform([Item(item_id="n", category=RUN, price=25)]), "n")
    assert new["price_z"] == pytest.approx(-5 / math.sqrt(200))
    assert new["price_pct"] == pytest.approx(2 / 5)
    deeper = row(features.transform([Item(item_id="d", category=RUN + " > Kids", price=60)]), "d")
    assert deeper["price_group"] == RUN  # Kids unseen -> its deepest known prefix
    assert deeper["price_pct"] == pytest.approx(1.0)


def test_discount_stock_and_levels(fitted: tuple[ItemFeatures, pl.DataFrame]) -> None:
    _, table = fitted
    assert row(table, "r3")["discount_pct"] == pytest.approx(25.0)  # 30 of 40
    assert row(table, "r5")["discount_pct"] == pytest.approx(0.0)  # above the original
    assert row(table, "r4")["discount_pct"] is None  # original price 0
    assert row(table, "r1")["discount_pct"] is None  # no original price
    flags = {i: row(table, i)["stock_flag"] for i in ("r1", "r2", "r3", "r4", "r5")}
    assert flags == {
        "r1": "out_of_stock",
        "r2": "low_stock",
        "r3": "low_stock",
        "r4": "in_stock",
        "r5": "untracked",
    }
    u1 = row(table, "u1")
    assert (u1["level_1"], u1["level_2"], u1["level_3"]) == ("Books", "Fiction", "Crime")
    assert u1["category_depth"] == 4
    assert u1["category_path"] == "Books > Fiction > Crime > Noir"
    x1 = row(table, "x1")
    assert (x1["level_1"], x1["category_depth"], x1["category_path"]) == (None, 0, None)


def test_missing_indicators_and_report(fitted: tuple[ItemFeatures, pl.DataFrame]) -> None:
    features, table = fitted
    x1 = row(table, "x1")
    assert all(x1[f"{f}_missing"] for f in ("title", "brand", "category", "price", "stock"))
    assert row(table, "u1")["title_missing"] is True  # blank text counts as missing
    assert row(table, "r5")["description_missing"] is False
    report = features.report()
    assert report["items"] == 10
    assert report["missing"] == {
        "title": 2,  # u1 (blank), x1
        "description": 9,
        "brand": 6,
        "category": 1,
        "price": 2,
        "original_price": 7,
        "stock": 6,
        "created_at": 10,
    }
    assert (report["duplicate_groups"], report["items_in_duplicate_groups"]) == (1, 2)


def test_matrix_columns_and_rows(fitted: tuple[ItemFeatures, pl.DataFrame]) -> None:
    features, table = fitted
    assert features.columns_ == [*BASE_COLUMNS, "cat1=Books", "cat1=Shoes", "cat1=<other>"]
    vocab = Vocabulary(["r3", "ghost", "x1"])
    m = features.matrix(catalog(), vocab)
    assert m.shape == (3, len(features.columns_))
    assert np.array_equal(m, features.matrix(table, vocab))  # transformed input too
    r3 = dict(zip(features.columns_, m[0], strict=True))
    assert r3["in_catalog"] == 1 and r3["price_log"] == pytest.approx(math.log(31))
    assert r3["price_pct"] == pytest.approx(0.5) and r3["discount"] == pytest.approx(0.25)
    assert r3["stock_low"] == 1 and r3["stock_in"] == 0 and r3["category_depth"] == 2
    assert r3["cat1=Shoes"] == 1 and r3["cat1=Books"] == 0
    assert r3["brand_missing"] == 0 and r3["description_missing"] == 1
    ghost = dict(zip(features.columns_, m[1], strict=True))
    assert ghost["in_catalog"] == 0 and ghost["price_missing"] == 1
    assert ghost["stock_untracked"] == 1 and ghost["price_pct"] == 0.5
    one_hot = ItemFeatures(max_categories=1).fit(catalog())
    assert one_hot.columns_[-2:] == ["cat1=Shoes", "cat1=<other>"]  # 7 shoes, 2 books
    books = one_hot.matrix([catalog()[7]], Vocabulary(["b1"]))[0]
    assert books[-1] == 1 and books[-2] == 0


def test_price_z_is_clipped_in_the_matrix() -> None:
    items = [Item(item_id=f"i{k}", price=1.0) for k in range(99)]
    items.append(Item(item_id="big", price=1000.0))
    features = ItemFeatures(z_clip=3.0).fit(items)
    big = features.matrix(items, Vocabulary(["big"]))[0, features.columns_.index("price_z")]
    assert big == 3.0
    assert row(features.transform(items), "big")["price_z"] == pytest.approx(9.949874, rel=1e-6)


def test_save_load_round_trip(fitted: tuple[ItemFeatures, pl.DataFrame], tmp_path: Path) -> None:
    features, table = fitted
    features.save(tmp_path / "f")
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [
        "item_features.json",
        "item_features.npz",
    ]
    loaded = ItemFeatures.load(tmp_path / "f")
    assert loaded.transform(catalog()).equals(table)
    vocab = Vocabulary(i.item_id for i in catalog())
    assert np.array_equal(loaded.matrix(catalog(), vocab), features.matrix(catalog(), vocab))
    assert loaded.report() == features.report()
    (tmp_path / "f" / "item_features.json").write_text("{}")
    with pytest.raises(ModelError):
        ItemFeatures.load(tmp_path / "f")


def test_frames_are_cleaned_like_items() -> None:
    raw = pl.DataFrame(
        {
            "item_id": [" a ", "b", "", "a"],
            "title": ["x", "  ", "z", "Mug"],
            "price": [1.0, 2, 3, 4],
        }
    )
    table = ItemFeatures().fit(raw).transform(raw)
    assert table["item_id"].to_list() == ["b", "a"]  # trimmed, empty id dropped, last 'a' wins
    assert table["title"].to_list() == [None, "Mug"]
    assert items_frame([]).height == 0
    assert ItemFeatures().fit([]).transform([]).height == 0


def test_misuse() -> None:
    with pytest.raises(NotFittedError):
        ItemFeatures().transform(catalog())
    with pytest.raises(ConfigError):
        ItemFeatures(min_group_size=0)
