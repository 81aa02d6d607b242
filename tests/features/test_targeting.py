"""Targeting (users-to-item) on a small SYNTHETIC shop with hand-checkable rankings.

The shop: anonymous orders o0..o2 each buy the tent and the sleeping bag (so they are
bought together); ann viewed the bag 3 times; bob bought the tent twice, 50 days ago;
cat bought the knife and the (discounted) pan twice each; dan bought the mug 4 times;
fay viewed the knife and the lamp once; eve viewed the bag 5 times but declined
personalization.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from shopcast.config import Settings
from shopcast.domain import Item, User
from shopcast.errors import ConfigError, NotFoundError
from shopcast.features.profile_index import ProfileIndex
from shopcast.features.similarity import ContentSimilarity
from shopcast.features.targeting import (
    SIGNALS,
    Neighbours,
    Targeter,
    TargetFilters,
    TargetingQuery,
    TargetingResult,
    TargetingWeights,
    content_neighbours,
    model_neighbours,
)
from shopcast.models import CoVisitation, Interactions, Vocabulary

DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NOW = T0 + 50 * DAY

ITEMS = [
    Item(item_id="TENT", title="Trail tent", category="Outdoor > Camping", brand="Acme",
         price=100),
    Item(item_id="BAG", title="Sleeping bag", category="Outdoor > Camping", brand="Acme",
         price=60),
    Item(item_id="MUG", title="Enamel mug", category="Outdoor > Camping", brand="Globex",
         price=10),
    Item(item_id="KNIFE", title="Kitchen knife", category="Home > Kitchen", brand="Globex",
         price=20),
    Item(item_id="PAN", title="Frying pan", category="Home > Kitchen", brand="Chefco",
         price=30, original_price=40),
    Item(item_id="LAMP", title="Desk lamp", category="Home > Office", brand="Lumo", price=40),
]  # fmt: skip
USERS = [
    User(user_id="ann", region="UK", consent={"push": True}),
    User(user_id="cat", region="FR"),
    User(user_id="eve", consent={"personalization": False}),
]


def _rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []

    def ev(kind: str, user: str | None, item: str, day: float, session: str | None = None) -> None:
        rows.append(
            {"type": kind, "user_id": user, "session_id": session, "item_id": item,
             "ts": T0 + day * DAY, "price": None, "value": None}
        )  # fmt: skip

    for k in range(3):
        ev("purchase", None, "TENT", 45 + k, session=f"o{k}")
        ev("purchase", None, "BAG", 45 + k, session=f"o{k}")
    for k in range(3):
        ev("view", "ann", "BAG", 49 + k / 10)
    ev("purchase", "bob", "TENT", 0)
    ev("purchase", "bob", "TENT", 0.5)
    for k in range(2):
        ev("purchase", "cat", "KNIFE", 40 + k)
        ev("purchase", "cat", "PAN", 42 + k)
    for k in range(4):
        ev("purchase", "dan", "MUG", 30 + k)
    ev("view", "fay", "KNIFE", 48)
    ev("view", "fay", "LAMP", 48.5)
    for k in range(5):
        ev("view", "eve", "BAG", 49 + k / 10)
    return rows


def _frame() -> pl.DataFrame:
    frame = pl.DataFrame(_rows()).with_columns(
        pl.col("price").cast(pl.Float64),
        pl.col("value").cast(pl.Float64),
        quantity=pl.lit(None, pl.Float64),
        context=pl.lit(None, pl.String),
    )
    return frame.sort("ts").with_columns(seq=pl.int_range(1, frame.height + 1))


class Shop:
    """A fitted targeter with the bundle-like neighbour sources of the shop."""

    def __init__(self, weights: TargetingWeights | None = None) -> None:
        frame = _frame()
        self.targeter = Targeter(weights=weights).fit(frame, ITEMS, USERS)
        vocab = Vocabulary(i.item_id for i in ITEMS)
        data = Interactions.from_frame(frame, items=vocab)
        bought = CoVisitation(window=20, event_weights={"purchase": 1.0, "add_to_cart": 0.5})
        self.content = ContentSimilarity().fit(ITEMS)
        self.relations: dict[str, Neighbours] = {
            "bought_together": model_neighbours(bought.fit(data), vocab),
            "covisit": model_neighbours(CoVisitation().fit(data), vocab),
            "similar": content_neighbours(self.content),
        }

    def rank(self, **query: object) -> TargetingResult:
        only = query.pop("only_users", None)
        return self.targeter.rank(
            TargetingQuery(**query),  # type: ignore[arg-type]
            now=NOW,
            relations=self.relations,
            content=self.content,
            only_users=only,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def shop() -> Shop:
    return Shop()


def ids(result: TargetingResult) -> list[str]:
    return [u.user_id for u in result.users]


def test_viewer_of_a_bought_together_item_ranks_first_for_the_item(shop: Shop) -> None:
    r = shop.rank(item_id="TENT")
    first = r.users[0]
    assert first.user_id == "ann"
    assert first.reason == "viewed Sleeping bag, often bought with Trail tent"
    assert max(first.signals, key=first.signals.__getitem__) == "bought_together"
    assert first.score == pytest.approx(sum(first.signals.values()), abs=1e-5)
    # bought_together by hand: 3 views of the bag (weight 1, decayed 1 day or less at a
    # 90-day half-life), the bag is the tent's only neighbour (row-max normalized: 1)
    x = sum(2.0 ** (-(NOW - (T0 + (49 + k / 10) * DAY)) / (90 * DAY)) for k in range(3))
    assert first.signals["bought_together"] == pytest.approx(1 - np.exp(-x / 10), abs=1e-5)
    assert r.target.kind == "item" and r.target.label == "Trail tent"
    assert r.target.categories == ["Outdoor", "Outdoor > Camping"]
    assert r.target.brands == ["Acme"]


def test_buyers_are_excluded_by_default_and_ranked_first_when_included(shop: Shop) -> None:
    r = shop.rank(item_id="TENT")
    assert "bob" not in ids(r)
    assert r.excluded_buyers == 1
    kept = shop.rank(item_id="TENT", exclude_buyers=False)
    assert kept.excluded_buyers == 0
    assert kept.users[0].user_id == "bob"
    assert kept.users[0].reason == "bought Trail tent 2 times"
    assert kept.eligible == r.eligible + 1


def test_consent_is_always_respected(shop: Shop) -> None:
    # eve viewed the bag more often than ann, but declined personalization
    for query in ({"item_id": "TENT"}, {"category": "Camping"}, {"text": "sleeping bag"}):
        assert "eve" not in ids(shop.rank(**query, limit=100))
    everyone = {"ann", "bob", "cat", "dan", "fay"}
    assert shop.rank(item_id="LAMP", exclude_buyers=False).eligible == len(everyone)


def test_category_target_ranks_the_category_fan(shop: Shop) -> None:
    r = shop.rank(category="Kitchen")
    assert r.target.kind == "category"
    assert {i.item_id for i in r.target.items} == {"KNIFE", "PAN"}
    assert r.target.categories == ["Home > Kitchen"]
    assert r.users[0].user_id == "cat"
    assert r.users[0].reason == "bought Kitchen items 4 times"
    assert ids(r).index("fay") > 0  # one view of the knife: ranked, but behind


def test_category_reason_names_the_share(shop: Shop) -> None:
    only_category = TargetingWeights(
        item=0, bought_together=0, covisit=0, similar=0, brand=0, price=0, activity=0,
        category=1,
    )  # fmt: skip
    r = Shop(only_category).rank(category="home > kitchen")
    assert ids(r) == ["cat", "fay"]
    assert r.users[0].reason == "loves Kitchen (100% of activity)"
    assert r.users[1].reason == "loves Kitchen (50% of activity)"
    # share x (1 - exp(-evidence / 10)); fay: one view of the knife (day 48), one of the
    # lamp (day 48.5), so evidence = their decayed weights and share = knife / evidence
    knife, lamp = (2.0 ** (-(NOW - (T0 + d * DAY)) / (90 * DAY)) for d in (48, 48.5))
    expected = knife / (knife + lamp) * (1 - np.exp(-(knife + lamp) / 10))
    assert r.users[1].score == pytest.approx(expected, abs=1e-6)


def test_brand_target_ranks_the_brand_fan(shop: Shop) -> None:
    r = shop.rank(brand="globex")
    assert r.target.kind == "brand" and r.target.brands == ["Globex"]
    assert {i.item_id for i in r.target.items} == {"MUG", "KNIFE"}
    assert ids(r)[:2] == ["dan", "cat"]
    assert r.users[0].reason == "bought Globex items 4 times"
    brand_only = TargetingWeights(
        item=0, bought_together=0, covisit=0, similar=0, category=0, price=0, activity=0,
        brand=1,
    )  # fmt: skip
    r = Shop(brand_only).rank(brand="Globex")
    assert r.users[0].user_id == "dan" and r.users[0].reason == "bought Globex 4 times"
    assert r.users[1].user_id == "cat" and r.users[1].reason == "bought Globex 2 times"


def test_category_and_brand_together_intersect(shop: Shop) -> None:
    r = shop.rank(category="Camping", brand="Acme")
    assert r.target.kind == "category+brand"
    assert {i.item_id for i in r.target.items} == {"TENT", "BAG"}
    with pytest.raises(NotFoundError, match="both"):
        shop.rank(category="Kitchen", brand="Acme")


def test_text_target_finds_the_matching_items(shop: Shop) -> None:
    r = shop.rank(text="New trail tent, 20% off")
    assert r.target.kind == "text"
    assert [i.item_id for i in r.target.items] == ["TENT"]
    assert r.users[0].user_id == "bob"  # no buyer exclusion for text targets
    assert r.users[0].reason == "bought Trail tent 2 times"
    ann = next(u for u in r.users if u.user_id == "ann")
    assert ann.reason == "viewed Sleeping bag, often bought with “New trail tent, 20% off”"
    knife = shop.rank(text="a sharp kitchen knife")
    assert knife.target.items[0].item_id == "KNIFE"
    with pytest.raises(NotFoundError, match="matches"):
        shop.rank(text="quantum zeppelin")


def test_unknown_targets_are_not_found(shop: Shop) -> None:
    with pytest.raises(NotFoundError, match="GHOST"):
        shop.rank(item_id="GHOST")
    with pytest.raises(NotFoundError, match="category"):
        shop.rank(category="Garden")
    with pytest.raises(NotFoundError, match="brand"):
        shop.rank(brand="Nobody")


def test_filters(shop: Shop) -> None:
    base = {"item_id": "LAMP", "exclude_buyers": False}
    assert ids(shop.rank(**base, filters=TargetFilters(regions=("uk",)))) == ["ann"]
    assert ids(shop.rank(**base, filters=TargetFilters(consent=("push",)))) == ["ann"]
    at_risk = shop.rank(**base, filters=TargetFilters(lifecycle=("at_risk",)))
    assert ids(at_risk) == ["bob"] and at_risk.users[0].lifecycle == "at_risk"
    # price sensitivity = discounted purchases / purchases: cat 2 of 4 (the pan), dan 0 of 4
    sensitive = shop.rank(**base, filters=TargetFilters(min_price_sensitivity=0.4))
    assert ids(sensitive) == ["cat"]
    assert set(ids(shop.rank(**base, filters=TargetFilters(max_price_sensitivity=0.0)))) == {
        "bob",
        "dan",
    }
    assert ids(shop.rank(**base, only_users=["fay", "ghost"])) == ["fay"]


def test_limit_and_order(shop: Shop) -> None:
    r = shop.rank(item_id="LAMP", limit=2)
    assert len(r.users) == 2
    scores = [u.score for u in shop.rank(item_id="LAMP").users]
    assert scores == sorted(scores, reverse=True)
    assert all(set(u.signals) == set(SIGNALS) for u in r.users)


def test_shares_equal_the_profile_affinities() -> None:
    settings = Settings(environment="test", profiles={"reference_time": "log"})
    index = ProfileIndex(settings)
    frame = _frame()
    index.load(frame, ITEMS, USERS, refit=False)
    targeter = Targeter(half_life_days=settings.profiles.half_life_days).fit(frame, ITEMS, USERS)
    for user in ("ann", "cat", "dan", "fay"):
        for kind in ("category", "brand"):
            mine = targeter.affinities(user, kind)
            theirs = index.affinities(user, kind)
            assert mine.keys() == theirs.keys()
            for key, value in theirs.items():
                assert mine[key] == pytest.approx(value, abs=1e-9)


def test_incremental_updates_equal_the_batch_fit(shop: Shop) -> None:
    frame = _frame()
    half = frame.height // 2
    step = Targeter().fit(frame.head(half), ITEMS, USERS)
    step.update(frame.slice(half))
    assert step.seq_ == frame.height
    for query in (TargetingQuery(item_id="TENT"), TargetingQuery(brand="Globex")):
        a = step.rank(query, now=NOW, relations=shop.relations)
        b = shop.targeter.rank(query, now=NOW, relations=shop.relations)
        assert [(u.user_id, u.reason) for u in a.users] == [(u.user_id, u.reason) for u in b.users]
        assert [u.score for u in a.users] == pytest.approx([u.score for u in b.users], abs=1e-9)


def test_consent_revoked_later_and_forget() -> None:
    shop = Shop()
    assert "ann" in ids(shop.rank(item_id="TENT"))
    shop.targeter.upsert_users([User(user_id="ann", consent={"personalization": False})])
    assert "ann" not in ids(shop.rank(item_id="TENT"))
    shop.targeter.upsert_users([User(user_id="ann")])
    assert ids(shop.rank(item_id="TENT"))[0] == "ann"
    shop.targeter.forget("ann")
    assert "ann" not in ids(shop.rank(item_id="TENT"))


def test_catalog_changes_apply_to_the_next_query() -> None:
    shop = Shop()
    shop.targeter.upsert_items([replace_item("LAMP", category=["Home", "Kitchen"])])
    r = shop.rank(category="Kitchen")
    assert "LAMP" in {i.item_id for i in r.target.items}


def replace_item(item_id: str, **update: object) -> Item:
    item = next(i for i in ITEMS if i.item_id == item_id)
    return item.model_copy(update=update)


def test_weights_are_validated() -> None:
    with pytest.raises(ConfigError, match="item"):
        TargetingWeights(item=-1)
    with pytest.raises(ConfigError, match="relation_scale"):
        replace(TargetingWeights(), relation_scale=0.0)
    with pytest.raises(ConfigError, match="max_target_items"):
        Targeter(max_target_items=0)
