"""Every trigger, with the controllable clock (SYNTHETIC catalog and events)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from tests.push.conftest import T0, Harness, ev

from shopcast.domain import Item
from shopcast.push.state import Timer

Make = Callable[..., Harness]


def test_cart_abandonment_fires_after_the_delay(harness: Make) -> None:
    h = harness(triggers={"cart_abandonment": {"delay": "30m"}})
    h.observe(ev("add_to_cart", "s1"))
    assert h.tick(29 * 60) == []
    (v,) = h.tick(61)
    assert v.outcome == "sent"
    (m,) = h.sent("cart_abandonment")
    assert m.items[0].item_id == "s1"
    assert m.items[0].reason == "still in your cart"
    assert len(m.items) == 4  # then pipeline items
    assert "Shoes 1" in m.title
    assert h.tick(3600) == []  # fired once


def test_cart_timer_restarts_on_change_and_stops_on_purchase(harness: Make) -> None:
    h = harness(triggers={"cart_abandonment": {"delay": 60}})
    h.observe(ev("add_to_cart", "s1"))
    h.clock.advance(50)
    h.observe(ev("add_to_cart", "s2"))
    assert h.tick(20) == []  # 70 s after the first, 20 s after the last change
    h.observe(ev("purchase", "s1"), ev("purchase", "s2"))
    assert h.tick(3600) == []
    h.observe(ev("add_to_cart", "t1"), ev("remove_from_cart", "t1"))
    assert h.tick(3600) == []


def test_cart_abandonment_small_delays_work(harness: Make) -> None:
    h = harness(triggers={"cart_abandonment": {"delay": "2s"}})
    h.observe(ev("add_to_cart", "s1"), ev("add_to_cart", "s2"))
    (v,) = h.tick(2)
    assert [i.item_id for i in v.items[:2]] == ["s1", "s2"]


def test_cart_item_out_of_stock_is_left_out(harness: Make) -> None:
    h = harness(triggers={"cart_abandonment": {"delay": 10}})
    h.items.catalog["s1"] = replace(h.info("s1"), stock=0)
    h.observe(ev("add_to_cart", "s1"), ev("add_to_cart", "s2"))
    (v,) = h.tick(10)
    assert v.items[0].item_id == "s2"


def test_browse_abandonment_item(harness: Make) -> None:
    h = harness(
        triggers={
            "browse_abandonment": {"delay": "1h", "views": 3},
            "session_nudge": {"enabled": False},
        }
    )
    for _ in range(3):
        h.observe(ev("view", "t2"))
        h.clock.advance(5)
    assert h.tick(3500) == []
    (v,) = h.tick(100)
    assert v.candidate.trigger == "browse_abandonment"
    assert v.items[0].item_id == "t2"
    assert all(i.item_id != "t2" for i in v.items[1:])


def test_browse_abandonment_cancelled_by_cart(harness: Make) -> None:
    h = harness(
        triggers={
            "browse_abandonment": {"delay": 60},
            "session_nudge": {"enabled": False},
            "cart_abandonment": {"enabled": False},
        }
    )
    for _ in range(3):
        h.observe(ev("view", "t2"))
    h.observe(ev("add_to_cart", "t2"))
    assert h.tick(3600) == []


def test_browse_abandonment_category(harness: Make) -> None:
    h = harness(triggers={"browse_abandonment": {"delay": 60}, "session_nudge": {"enabled": False}})
    for item in ("c0", "c1", "c2"):
        h.observe(ev("view", item))
    (v,) = h.tick(60)
    assert v.candidate.data == {"category": "Coffee"}
    assert all(h.info(i.item_id).leaf == "Coffee" for i in v.items)


def test_price_drop_reaches_interested_users(harness: Make) -> None:
    h = harness()
    h.observe(ev("view", "s3", "u1"), ev("favorite", "s3", "u2"), ev("view", "t1", "u3"))
    item = h.info("s3")
    verdicts = h.engine.observe_items(
        [
            Item(
                item_id="s3",
                title=item.title,
                category=["Shop", "Shoes"],
                price=item.price * 0.8,
                stock=5,
            )
        ]
    )
    assert sorted(v.candidate.user_id for v in verdicts) == ["u1", "u2"]
    m = h.sent("price_drop")[0]
    assert m.items[0].item_id == "s3"
    assert "was 13" in m.items[0].reason
    assert "now 10.4" in m.body


def test_small_price_change_and_unseen_users_do_not_fire(harness: Make) -> None:
    h = harness()
    h.observe(ev("view", "s3", "u1"))
    h.clock.advance(40 * 86400)  # interest older than the 30-day window
    h.observe(ev("view", "s4", "u2"))
    assert h.engine.observe_items([Item(item_id="s3", price=1.0, stock=5)]) == []
    assert h.engine.observe_items([Item(item_id="s4", price=13.9, stock=5)]) == []  # 0.7 %


def test_new_discount_counts_as_a_price_drop(harness: Make) -> None:
    h = harness()
    h.observe(ev("add_to_cart", "c1", "u1"))
    c1 = h.info("c1")
    (v,) = h.engine.observe_items(
        [Item(item_id="c1", price=c1.price, original_price=c1.price * 2, stock=5)]
    )
    assert v.outcome == "sent"
    assert "50% off" in v.items[0].reason


def test_back_in_stock(harness: Make) -> None:
    h = harness()
    h.observe(ev("favorite", "t4", "u1"))
    assert h.engine.observe_items([Item(item_id="t4", price=24.0, stock=0)]) == []
    (v,) = h.engine.observe_items([Item(item_id="t4", price=24.0, stock=3)])
    assert v.candidate.trigger == "back_in_stock"
    assert v.items[0].item_id == "t4"


def test_after_sales_guides_by_item_and_category(harness: Make) -> None:
    guides = [
        {"title": "Pitching your tent", "url": "https://shop.test/tents", "category": "Tents"},
        {"title": "Descaling", "kind": "care", "item_id": "c2"},
    ]
    h = harness(
        guides=guides,
        triggers={"after_sales": {"delay": "1d"}, "complementary": {"enabled": False}},
    )
    h.observe(ev("purchase", "t1"), ev("purchase", "c2", "u2"), ev("purchase", "s1", "u3"))
    assert h.tick(86399) == []
    verdicts = h.tick(1)
    got = {v.candidate.user_id: v.candidate.data["guides"] for v in verdicts}
    assert got == {
        "u1": [
            {
                "title": "Pitching your tent",
                "url": "https://shop.test/tents",
                "kind": "guide",
                "category": "Tents",
            }
        ],
        "u2": [{"title": "Descaling", "kind": "care", "item_id": "c2"}],
    }
    assert h.hook.messages == [] or all(m.channel == "webhook" for m in h.hook.messages)


def test_complementary_after_d_days(harness: Make) -> None:
    h = harness(triggers={"complementary": {"delay": "3d"}})
    h.observe(ev("purchase", "t1"))
    h.clock.advance(3600)
    h.observe(ev("purchase", "t2"))
    assert h.tick(3 * 86400 - 1) == []  # restarted by the later purchase
    (v,) = h.tick(1)
    assert v.candidate.data["bought"] == ["t1", "t2"]
    assert {i.item_id for i in v.items}.isdisjoint({"t1", "t2"})


def test_replenishment_when_the_cycle_comes_due(harness: Make) -> None:
    h = harness(triggers={"replenishment": {"lead": "1d"}, "complementary": {"enabled": False}})
    h.observe(ev("purchase", "c1"))
    h.clock.advance(10 * 86400)
    h.observe(ev("purchase", "c1", ts=T0 + 10 * 86400))
    h.items.observe([])
    # one purchase is no cycle; the second sets it: 10 days, reminded 1 day early
    assert h.tick(9 * 86400 - 1) == []
    (v,) = h.tick(1)
    assert v.items[0].item_id == "c1"
    assert v.candidate.data == {"cycle_days": 10}
    assert "10 days" in v.candidate.body


def test_promotion_uses_targeting(harness: Make) -> None:
    promos = [
        {
            "promotion_id": "spring",
            "title": "Spring coffee",
            "body": "10% with {coupon}",
            "coupon": "SPRING10",
            "category": "Coffee",
        }
    ]
    h = harness(promotions=promos, triggers={"promotion": {"min_score": 0.2}})
    h.items.targets = [
        ("u1", 0.9, "loves Coffee"),
        ("u2", 0.5, "bought Coffee"),
        ("u3", 0.1, "weak"),
    ]
    verdicts = h.engine.run_promotion("spring")
    assert sorted(v.candidate.user_id for v in verdicts) == ["u1", "u2"]
    m = h.sent("promotion")[0]
    assert m.title == "Spring coffee"
    assert m.data["coupon"] == "SPRING10"
    assert all(h.info(i.item_id).leaf == "Coffee" for i in m.items)


def test_scheduled_promotion_runs_at_its_start(harness: Make) -> None:
    promos = [
        {
            "promotion_id": "later",
            "title": "Tents week",
            "category": "Tents",
            "starts_at": T0 + 3600,
        }
    ]
    h = harness(promotions=promos)
    h.items.targets = [("u1", 0.9, "loves Tents")]
    assert h.tick(3599) == []
    (v,) = h.tick(1)
    assert v.candidate.trigger == "promotion"


def test_new_arrivals_matching_profile(harness: Make) -> None:
    h = harness()
    h.items.targets = [("u2", 0.4, "loves Shoes")]
    new = Item(
        item_id="s9", title="Shoes 9", category=["Shop", "Shoes"], price=30, created_at=T0 - 60
    )
    old = Item(
        item_id="s8",
        title="Shoes 8",
        category=["Shop", "Shoes"],
        price=30,
        created_at=T0 - 90 * 86400,
    )
    (v,) = h.engine.observe_items([new, old])
    assert v.candidate.user_id == "u2"
    assert v.items[0].item_id == "s9"
    assert h.engine.observe_items([new]) == []  # not new any more


def test_session_nudge_within_the_same_call(harness: Make) -> None:
    h = harness()
    assert h.observe(ev("view", "s1")) == []
    assert h.observe(ev("view", "t1")) == []
    h.clock.advance(2)
    assert h.observe(ev("view", "s2")) == []
    (v,) = h.observe(ev("view", "s3"))  # third view in Shoes
    assert v.candidate.trigger == "session_nudge"
    assert v.channels == ("live",)
    (m,) = h.live.messages  # delivered before observe returned
    assert {i.item_id for i in m.items}.isdisjoint({"s1", "s2", "s3"})
    assert all(h.info(i.item_id).leaf == "Shoes" for i in m.items)
    assert h.observe(ev("view", "s4")) == []  # once per category and window


def test_disabled_trigger_does_nothing(harness: Make) -> None:
    h = harness(triggers={"session_nudge": {"enabled": False}})
    for item in ("s1", "s2", "s3"):
        assert h.observe(ev("view", item)) == []


def test_runtime_configuration(harness: Make) -> None:
    h = harness()
    h.engine.configure_trigger("cart_abandonment", {"delay": "5s"})
    h.observe(ev("add_to_cart", "s1"))
    (v,) = h.tick(5)
    assert v.outcome == "sent"


def test_a_failing_trigger_does_not_stop_the_others(
    harness: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shopcast.push.triggers import TRIGGERS

    def broken(*args: object) -> list[object]:
        raise RuntimeError("bug")

    monkeypatch.setattr(TRIGGERS["browse_abandonment"], "on_events", broken)
    h = harness()
    h.observe(ev("view", "s1"), ev("view", "s2"))
    (v,) = h.observe(ev("view", "s3"))
    assert v.candidate.trigger == "session_nudge"


def test_one_sqlite_file_shares_one_transaction(tmp_path: Path) -> None:
    """On one file the outbox, state and journal share a connection: a decision round
    commits its timers, decisions and outbox rows together."""
    from shopcast.push.engine import open_storage

    url = f"sqlite:///{tmp_path / 'push.db'}"
    outbox, state, journal = open_storage(url, url)
    assert state.shares(outbox) and state.shares(journal)
    try:
        with state.batch():  # a nested batch joins the outer transaction
            state.arm([Timer("u1", "cart_abandonment", "cart", T0)])
            with state.batch():
                outbox.enqueue([], [])
        assert state.timer("u1", "cart_abandonment", "cart") is not None
        with pytest.raises(ZeroDivisionError), state.batch():
            state.arm([Timer("u2", "cart_abandonment", "cart", T0)])
            _ = 1 / 0
        assert state.timer("u2", "cart_abandonment", "cart") is None  # rolled back
    finally:
        outbox.close()
        state.close()
        journal.close()
    other, _, _ = open_storage("memory://", "sqlite://:memory:")
    assert not state.shares(other)
