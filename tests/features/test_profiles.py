"""User profiles: hand-computed values on a SYNTHETIC shop, incremental == batch, consent."""

from __future__ import annotations

import math
import random
from typing import Any

import polars as pl
import pytest

from shopcast.config import Settings
from shopcast.domain import Event, Item, User
from shopcast.errors import NotFoundError
from shopcast.features.profile_index import ProfileIndex
from shopcast.features.profiles import (
    ProfileParams,
    RfmScorer,
    UserProfile,
    age_band,
    lifecycle_of,
)
from shopcast.storage import open_store

DAY = 86_400.0
T0 = 1_767_304_800.0  # 2026-01-01T22:00:00Z = 23:00 in Paris (UTC+1 in winter)
NOW = T0 + 30 * DAY  # one half-life (30 days) after T0
D30 = 0.5  # 2^(-30/30): decay of an event at T0, seen at NOW
D15 = 2**-0.5  # decay of an event at T0 + 15 days

ITEMS = [  # SYNTHETIC catalog
    Item(
        item_id="tent",
        category="Outdoor > Camping",
        brand="Acme",
        price=100,
        original_price=125,
    ),
    Item(item_id="bag", category="Outdoor > Camping", brand="Acme", price=50),
    Item(item_id="mug", category="Home > Kitchen", brand="Globex", price=10),
    Item(item_id="lamp", category="Home > Lighting", price=40),
    Item(item_id="crib", category="Baby > Nursery", price=200),
]
USERS = [  # SYNTHETIC users
    User(user_id="alice", age=30, gender="F", region="FR", timezone="Europe/Paris"),
    User(user_id="bob", age=17, occupation="student"),
    User(user_id="carol", age=41, consent={"personalization": False}),
]


def ev(kind: str, user: str | None, item: str | None, ts: float, **kw: Any) -> Event:
    return Event(type=kind, user_id=user, item_id=item, timestamp=ts, **kw)


def synthetic_events() -> list[Event]:
    """SYNTHETIC events; the expected figures below are computed by hand from these."""
    out = [
        ev("view", "alice", "tent", T0, context={"device": "mobile"}),
        ev("view", "alice", "bag", T0),
        ev("add_to_cart", "alice", "tent", T0),
        ev("purchase", "alice", "tent", T0, price=90, quantity=2, session_id="s1"),
        ev("view", "alice", "mug", T0 + 15 * DAY, context={"device": "desktop"}),
        ev("purchase", "alice", "mug", T0 + 15 * DAY),
        ev("search", "alice", None, T0 + 25 * DAY + 10 * 3600, query="stove"),
        ev("impression", "alice", "lamp", T0 + 26 * DAY),  # ignored: not behaviour
        ev("view", None, "tent", T0 + DAY, session_id="anon"),  # ignored: anonymous
    ]
    out += [ev("view", "bob", "lamp", T0 + h * 3600) for h in range(12)]
    out += [ev("purchase", "carol", "mug", T0)]  # declined personalization
    out += [
        ev("add_to_cart", "dave", "crib", NOW - 40 * DAY),
        ev("purchase", "dave", "crib", NOW - 40 * DAY + 60),
    ]
    return out


def settings(**profiles: Any) -> Settings:
    return Settings(environment="test", database_url="memory://", profiles=profiles)


def incremental(events: list[Event], s: Settings | None = None) -> ProfileIndex:
    index = ProfileIndex(s or settings(), clock=lambda: NOW)
    index.upsert_items(ITEMS)
    index.items.rebuild()  # category medians
    index.upsert_users(USERS)
    index.observe(events)
    return index


def batch(events: list[Event], s: Settings | None = None) -> ProfileIndex:
    store = open_store("memory://")
    store.events.append(events)
    index = ProfileIndex(s or settings(), clock=lambda: NOW)
    index.load(store.events.frame(), ITEMS, USERS)
    return index


def test_alice_hand_computed() -> None:
    index = incremental(synthetic_events())
    index.refit()
    p = index.profile("alice")
    assert p.demographics.age_band == "25-34" and p.demographics.region == "FR"
    b = p.behaviour
    assert b is not None
    cats = {a.key: a for a in b.categories}
    assert cats["Outdoor"].weight == pytest.approx(10 * D30)  # view+view+cart+purchase
    assert cats["Outdoor > Camping"].weight == pytest.approx(10 * D30)
    assert cats["Home > Kitchen"].weight == pytest.approx(6 * D15)  # view + purchase
    total = 10 * D30 + 6 * D15
    assert cats["Outdoor"].share == pytest.approx(10 * D30 / total)
    assert cats["Home"].share == pytest.approx(6 * D15 / total)
    assert (cats["Outdoor"].intents, cats["Home > Kitchen"].intents) == (2, 1)
    assert [a.key for a in b.categories] == [
        "Outdoor",
        "Outdoor > Camping",
        "Home",
        "Home > Kitchen",
    ]
    assert cats["Outdoor > Camping"].level == 1
    assert [(a.key, round(a.share, 6)) for a in b.brands] == [
        ("Acme", round(10 * D30 / total, 6)),
        ("Globex", round(6 * D15 / total, 6)),
    ]
    # cart tent 100 (catalog), purchase tent 90, purchase mug 10 (catalog)
    assert b.price.median_price == 90
    # ratios to the category medians: 100/75, 90/75, 10/10 -> median 1.2
    assert b.price.price_index == pytest.approx(1.2)
    assert b.price.band == "mid"
    assert (b.price.purchases, b.price.discounted_purchases, b.price.discount_share) == (2, 1, 0.5)
    assert b.rfm.monetary == pytest.approx(90 * 2 + 10)
    assert b.rfm.frequency == 2  # session s1 + the day of the mug purchase
    assert b.rfm.recency_days == pytest.approx(15)
    a = b.activity
    assert (a.events, a.events_7d, a.events_30d) == (7, 1, 7)
    assert a.lifecycle == "active"
    assert a.days_since_first_event == pytest.approx(30)
    assert b.hours[23] == 6 and b.hours[9] == 1 and sum(b.hours) == 7  # Paris time
    assert b.preferred_hours == [23, 9]
    assert b.timezone == "Europe/Paris"
    assert b.devices == {"desktop": 1, "mobile": 1}
    assert b.recent.viewed == ["mug", "tent", "bag"]  # tie at T0: larger id first
    assert b.recent.carted == ["tent"] and b.recent.bought == ["mug", "tent"]
    f = b.funnel
    assert (f.views, f.carts, f.purchases) == (3, 1, 2)
    assert f.cart_rate == pytest.approx(1 / 3) and f.purchase_rate == pytest.approx(2 / 3)
    assert f.cart_to_purchase == 2.0


def test_window_shopper_night_owl_in_utc() -> None:
    b = incremental(synthetic_events()).profile("bob").behaviour
    assert b is not None
    assert b.timezone == "UTC"
    assert sum(b.hours[h] for h in (22, 23, 0, 1, 2, 3, 4)) == 7
    assert b.funnel.views == 12 and b.funnel.purchase_rate == 0.0
    assert b.funnel.cart_to_purchase is None
    assert b.brands == [] and b.brand_events == 0
    assert b.categories[0].key == "Home" and b.categories[0].share == 1.0
    assert b.rfm.recency_days is None and b.price.band is None


def test_lifecycle_from_the_injected_clock() -> None:
    events = synthetic_events()
    index = incremental(events)
    dave = index.profile("dave").behaviour
    assert dave is not None and dave.activity.lifecycle == "at_risk"
    assert index.profile("dave", now=NOW + 60 * DAY).behaviour.activity.lifecycle == "churned"  # type: ignore[union-attr]
    assert index.profile("dave", now=NOW - 35 * DAY).behaviour.activity.lifecycle == "new"  # type: ignore[union-attr]


def test_lifecycle_thresholds() -> None:
    p = ProfileParams(weights={})
    assert lifecycle_of(14, 0, p) == "new"
    assert lifecycle_of(14.01, 0, p) == "active"
    assert lifecycle_of(100, 30, p) == "active"
    assert lifecycle_of(100, 30.01, p) == "at_risk"
    assert lifecycle_of(100, 90, p) == "at_risk"
    assert lifecycle_of(100, 90.01, p) == "churned"


def test_age_bands() -> None:
    assert [age_band(a) for a in (None, 7, 18, 24, 25, 64, 65, 90)] == [
        None, "<18", "18-24", "18-24", "25-34", "55-64", "65+", "65+",
    ]  # fmt: skip


def test_consent_declined_gives_demographics_only() -> None:
    index = incremental(synthetic_events())
    carol = index.profile("carol")
    assert carol.personalization is False and carol.behaviour is None
    assert carol.demographics.age_band == "35-44"
    assert "carol" not in index.states and "carol" not in index.user_ids()


def test_consent_revoked_then_granted_replays_the_log() -> None:
    events = synthetic_events()
    index = incremental(events)
    index._history = lambda uid: [e for e in events if e.user_id == uid]
    alice = index.profile("alice")
    declined = USERS[0].model_copy(update={"consent": {"personalization": False}})
    index.upsert_users([declined])
    assert index.profile("alice").behaviour is None and "alice" not in index.states
    index.observe([ev("view", "alice", "lamp", T0 + 27 * DAY)])  # not recorded
    assert "alice" not in index.states
    index.upsert_users([USERS[0]])
    assert index.profile("alice") == alice


def test_unknown_user_is_not_found() -> None:
    index = incremental(synthetic_events())
    with pytest.raises(NotFoundError, match="nobody"):
        index.profile("nobody")
    assert "anon" not in index.states  # anonymous sessions have no profile


def _close(a: Any, b: Any, path: str = "") -> None:
    """Equal, floats within 1e-9 (relative)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


def assert_same_profiles(one: ProfileIndex, other: ProfileIndex, now: float) -> int:
    ids = sorted(set(one.states) | set(other.states) | set(one.users))
    assert sorted(one.states) == sorted(other.states)
    for uid in ids:
        a: UserProfile = one.profile(uid, now)
        b: UserProfile = other.profile(uid, now)
        _close(a.model_dump(), b.model_dump(), uid)
    return len(ids)


@pytest.mark.parametrize("half_life", [30.0, 1.0])  # 1 day: affinities get rescaled
def test_incremental_equals_batch_synthetic(half_life: float) -> None:
    events = synthetic_events()
    events += [  # long gaps (> 64 half-lives at 1 day) and a user with one event
        ev("view", "frank", "tent", T0 - 200 * DAY, context={"device": "tv"}),
        ev("favorite", "frank", "bag", T0),
        ev("add_to_cart", "frank", "mug", T0 + 100 * DAY, price=12.5),
        ev("rate", "gina", "lamp", T0 + 3, value=4),
    ]
    s = settings(half_life_days=half_life, recent_items=2)
    shuffled = events[:]
    random.Random(4).shuffle(shuffled)  # arrival order differs from time order
    inc = incremental(shuffled, s)
    inc.refit()  # RFM quintiles and segments: fitted on the profiles, as the batch does
    bat = batch(events, s)
    assert assert_same_profiles(inc, bat, NOW) == 6  # alice bob carol dave frank gina


def test_affinities_are_rescaled_after_long_gaps() -> None:
    s = settings(half_life_days=1.0)
    index = incremental(
        [ev("view", "frank", "tent", T0), ev("view", "frank", "mug", T0 + 100 * DAY)], s
    )
    state = index.states["frank"]
    assert state.anchor == T0 + 100 * DAY  # 100 half-lives > 64: moved, values rescaled
    assert state.categories["Home"] == 1.0
    assert state.categories["Outdoor"] == pytest.approx(2.0**-100, rel=1e-12)


def test_rfm_quintile_scores() -> None:
    # 5 buyers: recency 1..5 days, frequency 1..5 orders, monetary 10..50
    scorer = RfmScorer().fit([(float(i), float(i), 10.0 * i) for i in range(1, 6)])
    assert scorer.edges_ is not None
    assert scorer.edges_[1].tolist() == pytest.approx([1.8, 2.6, 3.4, 4.2])
    assert scorer.score(1, 1, 10) == (5, 1, 1)
    assert scorer.score(5, 5, 50) == (1, 5, 5)
    assert scorer.score(3, 3, 30) == (3, 3, 3)
    assert scorer.monetary_p90_ == pytest.approx(46.0)
    again = RfmScorer.from_json(scorer.to_json())
    assert again.score(2.5, 2.5, 25) == scorer.score(2.5, 2.5, 25) == (4, 2, 2)


def test_rfm_scores_in_profiles_after_refit() -> None:
    index = incremental(synthetic_events())
    index.refit()
    # buyers alice (recency 15, F 2, M 190) and dave (40, 1, 200)
    assert index.scorer.n_buyers_ == 2
    rfm = index.profile("alice").behaviour.rfm  # type: ignore[union-attr]
    assert (rfm.r_score, rfm.f_score, rfm.m_score) == (5, 5, 1)


def test_event_log_frame_has_what_the_batch_path_reads() -> None:
    store = open_store("memory://")
    store.events.append(synthetic_events())
    frame = store.events.frame()
    assert {"user_id", "session_id", "item_id", "type", "ts", "context"} <= set(frame.columns)
    assert frame.filter(pl.col("context").is_not_null()).height == 2
