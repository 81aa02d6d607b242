"""The learned ranker never trains on events of users who declined personalization.

All data here is SYNTHETIC.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from shopcast.config import Settings
from shopcast.domain import Event, Item, User
from shopcast.models import Vocabulary
from shopcast.storage import open_store
from shopcast.training import ranker_data as RD
from shopcast.training.bundle import ModelBundle, new_version

DAY = 86_400.0
T0 = 1_767_225_600.0
SPLIT = RD.SplitConfig(fractions=(0.4, 0.65, 0.8), cuts_per_subject=3)


def _shop(users: int = 40, visits: int = 6) -> tuple[pl.DataFrame, list[Item]]:
    """Shoppers each loyal to one of 8 brands (three random views, then one of the brand)."""
    rng = np.random.default_rng(11)
    items = [
        Item(item_id=f"i{b}-{j}", brand=f"b{b}", category=[f"c{j % 3}"], price=10.0 + j)
        for b in range(8)
        for j in range(8)
    ]
    events: list[Event] = []
    for u in range(users):
        for v in range(visits):
            t = T0 + v * 2 * DAY + u * 600
            picks = [items[int(rng.integers(64))].item_id for _ in range(3)]
            picks.append(f"i{u % 8}-{int(rng.integers(8))}")
            events += [
                Event(type="view", user_id=f"u{u}", item_id=item, timestamp=t + 60 * k)
                for k, item in enumerate(picks)
            ]
    store = open_store("memory://")
    store.events.append(events)
    return store.events.frame(), items


def _users(declined: set[str], n: int = 40) -> list[User]:
    return [
        User(user_id=f"u{u}", consent={"personalization": f"u{u}" not in declined})
        for u in range(n)
    ]


def _same(a: RD.RankerDataset, b: RD.RankerDataset) -> bool:
    for w in RD.WINDOWS:
        x, y = a.windows[w], b.windows[w]
        if x.x.shape != y.x.shape or not np.array_equal(x.x, y.x, equal_nan=True):
            return False
        if not np.array_equal(x.y, y.y) or not np.array_equal(x.sizes, y.sizes):
            return False
    return True


DECLINED = {f"u{u}" for u in range(0, 40, 3)}


def test_dataset_of_a_log_with_declining_users_equals_the_log_without_their_events() -> None:
    frame, items = _shop()
    without = frame.filter(~pl.col("user_id").is_in(sorted(DECLINED)))
    assert without.height < frame.height
    settings = Settings()
    filtered = RD.build_dataset(frame, items, _users(DECLINED), settings, SPLIT)
    reference = RD.build_dataset(without, items, _users(set()), settings, SPLIT)
    assert _same(filtered, reference)
    # the same users consenting: their events do shape the dataset (the check can fail)
    consenting = RD.build_dataset(frame, items, _users(set()), settings, SPLIT)
    assert not _same(consenting, reference)


def test_without_declined_keeps_anonymous_events_and_consenting_users() -> None:
    frame = pl.DataFrame(
        {
            "user_id": ["u0", "u1", None, "u3"],
            "session_id": [None, None, "s9", None],
            "item_id": ["a", "b", "c", "d"],
        }
    )
    users = [
        User(user_id="u0", consent={"personalization": False}),
        User(user_id="u1", consent={"personalization": True}),
        User(user_id="u3"),  # no declaration: personalized
    ]
    kept = RD.without_declined(frame, users)
    assert kept["item_id"].to_list() == ["b", "c", "d"]
    assert RD.without_declined(frame, users[1:]) is frame


def test_attach_ranker_counts_and_trains_without_declining_users() -> None:
    frame, items = _shop()
    bundle = ModelBundle(new_version(), Vocabulary(), {}, 0)
    info = RD.attach_ranker(
        bundle, frame, items, _users(DECLINED), Settings(), required=True, split=SPLIT
    )
    per_user = frame.height // 40
    assert info["events"] == frame.height - len(DECLINED) * per_user
    assert "ranker" in bundle.models
