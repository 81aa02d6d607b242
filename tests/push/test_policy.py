"""Every policy rule, with the controllable clock (SYNTHETIC catalog and events)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.push.conftest import T0, Harness, consenting, ev, push_settings

from shopcast.domain import User
from shopcast.push.policy import in_holdout, quiet_until

Make = Callable[..., Harness]
HOOKS = [{"name": "crm", "url": "http://127.0.0.1:9/hook", "secret": "s" * 32}]


def carts(h: Harness, *items: str, user: str = "u1") -> None:
    h.observe(*[ev("add_to_cart", i, user) for i in items])


def outcomes(verdicts: list) -> list[tuple[str, str | None]]:
    return [(v.outcome, v.rule) for v in verdicts]


def test_declined_personalization_and_opt_out(harness: Make) -> None:
    users = {
        "u1": User(user_id="u1", consent={"personalization": False, "push": True}),
        "u2": User(user_id="u2", consent={"push": False}),
    }
    h = harness(users=users, triggers={"cart_abandonment": {"delay": 1}})
    carts(h, "s1", user="u1")
    carts(h, "s2", user="u2")
    assert sorted(outcomes(h.tick(1))) == [("suppressed", "consent"), ("suppressed", "opt_out")]
    assert h.sent() == []


def test_channel_consent(harness: Make) -> None:
    users = {
        "u1": User(user_id="u1"),  # no opt-in: live only (webhook needs consent)
        "u2": User(user_id="u2", consent={"push_webhook": True}),
        "u3": User(user_id="u3", consent={"push_live": False}),  # live opted out, no webhook
    }
    h = harness(users=users, webhooks=HOOKS, triggers={"cart_abandonment": {"delay": 1}})
    for u in users:
        carts(h, "s1", user=u)
    got = {v.candidate.user_id: (v.outcome, v.rule, v.channels) for v in h.tick(1)}
    assert got == {
        "u1": ("sent", None, ("live",)),
        "u2": ("sent", None, ("live", "webhook")),
        "u3": ("suppressed", "consent", ()),
    }
    assert sorted((m.user_id, m.channel) for m in h.sent()) == [
        ("u1", "live"),
        ("u2", "live"),
        ("u2", "webhook"),
    ]


def test_quiet_hours_defer_in_the_users_time_zone(harness: Make) -> None:
    users = {"u1": User(user_id="u1", timezone="Asia/Tokyo", consent={"push": True})}
    h = harness(
        users=users,
        quiet_hours={"enabled": True, "start": "21:00", "end": "08:00"},
        triggers={"cart_abandonment": {"delay": 60}},
    )
    # T0 is 12:00 UTC = 21:00 in Tokyo: quiet until 08:00 Tokyo = 23:00 UTC
    h.clock.now = T0 - 60
    carts(h, "s1")
    (v,) = h.tick(60)
    assert (v.outcome, v.rule) == ("deferred", "quiet_hours")
    assert v.defer_until == T0 + 11 * 3600
    assert h.tick(11 * 3600 - 1) == []
    (v,) = h.tick(1)
    assert v.outcome == "sent"
    assert h.sent("cart_abandonment")[0].items[0].item_id == "s1"


def test_quiet_hours_drop_and_exempt_nudge(harness: Make) -> None:
    h = harness(
        quiet_hours={"enabled": True, "start": "11:00", "end": "13:00", "mode": "drop"},
        triggers={"cart_abandonment": {"delay": 1}},
    )
    carts(h, "s1")
    assert outcomes(h.tick(1)) == [("suppressed", "quiet_hours")]
    for item in ("t1", "t2", "t3"):  # the shopper is on the site: the nudge is exempt
        verdicts = h.observe(ev("view", item))
    assert outcomes(verdicts) == [("sent", None)]


def test_quiet_until_wraps_midnight() -> None:
    s = push_settings(quiet_hours={"enabled": True, "start": "22:00", "end": "07:00"}).push
    utc = User(user_id="x", timezone="UTC")
    assert quiet_until(s, utc, T0) is None  # 12:00
    assert quiet_until(s, utc, T0 + 11 * 3600) == T0 + 19 * 3600  # 23:00 -> 07:00
    assert quiet_until(s, utc, T0 + 14 * 3600) == T0 + 19 * 3600  # 02:00 -> 07:00


def test_daily_and_weekly_caps(harness: Make) -> None:
    h = harness(daily_cap=2, weekly_cap=3, triggers={"cart_abandonment": {"delay": 1}})
    results = []
    for i in range(3):  # three carts in one day: the third is capped
        carts(h, f"s{i}")
        results += outcomes(h.tick(3600))
    assert results == [("sent", None), ("sent", None), ("suppressed", "daily_cap")]
    h.clock.advance(86400)
    carts(h, "t1")
    assert outcomes(h.tick(3600)) == [("sent", None)]
    carts(h, "t2")
    assert outcomes(h.tick(3600)) == [("suppressed", "weekly_cap")]
    h.clock.advance(7 * 86400)
    carts(h, "t3")
    assert outcomes(h.tick(3600)) == [("sent", None)]


def test_trigger_cap(harness: Make) -> None:
    h = harness(triggers={"cart_abandonment": {"delay": 1, "max_per_day": 1}})
    carts(h, "s1")
    assert outcomes(h.tick(60)) == [("sent", None)]
    carts(h, "s2")
    assert outcomes(h.tick(60)) == [("suppressed", "trigger_cap")]
    h.clock.advance(86400)
    carts(h, "s3")
    assert outcomes(h.tick(60)) == [("sent", None)]


def test_priority_among_competing_messages_and_min_gap(harness: Make) -> None:
    h = harness(
        min_gap="10m",
        guides=[{"title": "Care", "category": "Tents"}],
        triggers={
            "cart_abandonment": {"delay": 60, "priority": 80},
            "after_sales": {"delay": 60, "priority": 30, "channels": ["live"]},
        },
    )
    h.observe(ev("purchase", "t1"), ev("add_to_cart", "s1"))
    got = {v.candidate.trigger: (v.outcome, v.rule) for v in h.tick(60)}
    assert got == {"cart_abandonment": ("sent", None), "after_sales": ("suppressed", "priority")}
    carts(h, "s2")
    assert outcomes(h.tick(60)) == [("suppressed", "min_gap")]  # 1 min after the last push
    carts(h, "s3")
    assert outcomes(h.tick(600)) == [("sent", None)]


def test_no_repeat_of_the_same_item(harness: Make) -> None:
    h = harness(
        no_repeat_days=7,
        triggers={"cart_abandonment": {"delay": 1}, "complementary": {"enabled": False}},
    )
    carts(h, "s1")
    (first,) = h.tick(10)
    pushed = {i.item_id for i in first.items}
    h.observe(ev("purchase", "s1"))
    carts(h, "s1")  # the same item again within 7 days
    assert outcomes(h.tick(10)) == [("suppressed", "no_repeat")]
    carts(h, "s5")  # another item: sent, without the items pushed before
    (v,) = h.tick(10)
    assert v.outcome == "sent"
    assert v.items[0].item_id == "s5"
    assert pushed.isdisjoint(i.item_id for i in v.items[1:])
    h.clock.advance(8 * 86400)
    carts(h, "s1")
    assert outcomes(h.tick(10)) == [("sent", None)]


def test_holdout_is_deterministic_and_near_its_share() -> None:
    users = [f"user{i}" for i in range(4000)]
    held = [u for u in users if in_holdout("salt", "cart_abandonment", u, 0.1)]
    assert 0.08 < len(held) / len(users) < 0.12
    assert held == [u for u in users if in_holdout("salt", "cart_abandonment", u, 0.1)]
    other = [u for u in users if in_holdout("salt", "price_drop", u, 0.1)]
    assert held != other  # per trigger
    assert not any(in_holdout("salt", "x", u, 0.0) for u in users)


def test_holdout_decisions_are_journaled_not_sent(harness: Make) -> None:
    ids = [f"h{i}" for i in range(60)]
    h = harness(users=consenting(*ids), triggers={"cart_abandonment": {"delay": 1, "holdout": 0.5}})
    for u in ids:
        carts(h, "s1", user=u)
    verdicts = h.tick(1)
    held = {v.candidate.user_id for v in verdicts if v.outcome == "holdout"}
    sent = {v.candidate.user_id for v in verdicts if v.outcome == "sent"}
    assert held and sent and held | sent == set(ids)
    assert {m.user_id for m in h.sent()} == sent
    assert held == {
        u for u in ids if in_holdout(h.engine.config.holdout_salt, "cart_abandonment", u, 0.5)
    }


def test_a_decision_is_made_once(harness: Make) -> None:
    h = harness(triggers={"session_nudge": {"views": 2}})
    for item in ("s1", "s2"):
        verdicts = h.observe(ev("view", item))
    (v,) = verdicts
    again = h.engine._decide([v.candidate], h.clock())
    assert again == []
    assert len(h.sent()) == 1


@pytest.mark.parametrize("mode", ["defer", "drop"])
def test_quiet_hours_settings_validate(mode: str) -> None:
    s = push_settings(quiet_hours={"start": "23:30", "end": "06:00", "mode": mode})
    assert s.push.quiet_hours.mode == mode
