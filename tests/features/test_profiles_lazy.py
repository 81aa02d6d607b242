"""Lazy profiles (``profiles.resident_users``): states and user records are read from the
store on first use, at most N of each in memory, and give the batch path's profiles.
SYNTHETIC data (the hand-computed events of test_profiles.py)."""

from __future__ import annotations

from tests.features.test_profiles import (
    DAY,
    ITEMS,
    NOW,
    T0,
    USERS,
    _close,
    batch,
    ev,
    settings,
    synthetic_events,
)

from shopcast.domain import Event
from shopcast.features.profile_index import LruCache, ProfileIndex
from shopcast.features.profiles import profile_of
from shopcast.storage import Store, open_store

PEOPLE = ("alice", "bob", "carol", "dave")


def shop(events: list[Event]) -> Store:
    store = open_store("memory://")
    store.items.upsert(ITEMS)
    store.users.upsert(USERS)
    store.events.append(events)
    return store


def lazy(store: Store, resident: int) -> ProfileIndex:
    return ProfileIndex.from_store(store, settings(resident_users=resident), clock=lambda: NOW)


def test_lazy_profiles_equal_the_batch_ones() -> None:
    events = synthetic_events()
    index = lazy(shop(events), resident=10)  # every user warm: same RFM and segments
    whole = batch(events)
    for uid in PEOPLE:
        _close(index.profile(uid, NOW).model_dump(), whole.profile(uid, NOW).model_dump(), uid)
    _close(index.card("alice", NOW).model_dump(), whole.card("alice", NOW).model_dump())
    assert index.declined() == whole.declined() == frozenset({"carol"})


def test_at_most_resident_users_in_memory_and_reloaded_alike() -> None:
    events = synthetic_events()
    index = lazy(shop(events), resident=2)
    whole = batch(events)
    p = index.params
    for _ in range(2):  # the second round reads users evicted by the first
        for uid in PEOPLE:
            got = profile_of(uid, index.users.get(uid), index.states.get(uid), NOW, p)
            want = profile_of(uid, whole.users.get(uid), whole.states.get(uid), NOW, p)
            _close(got.model_dump(), want.model_dump(), uid)
            assert len(index.states) <= 2 and len(index.users) <= 2
    assert index.states.get("carol") is None  # declined: no state, even loaded
    assert index.states.get("nobody") is None and index.users.get("nobody") is None


def test_observe_counts_each_event_once() -> None:
    events = synthetic_events()
    store = shop(events)
    index = lazy(store, resident=2)
    before = index.states["alice"].events
    new = [ev("view", "alice", "lamp", T0 + 30 * DAY), ev("view", "bob", "tent", T0 + 2 * DAY)]
    store.events.append(new)  # committed, then observed (as the engine does)
    index.observe(new)
    assert index.states["alice"].events == before + 1  # resident: moved on
    assert index.states["bob"].events == 13  # loaded after the commit: 12 + 1, once
    later = ev("view", "bob", "mug", T0 + 3 * DAY)
    store.events.append([later])
    index.states.get("bob")  # resident, loaded with the previous event only
    index.observe([later])
    assert index.states["bob"].events == 14
    # an event already in a fresh load is not counted again
    index.states.pop("dave")
    again = ev("view", "dave", "mug", NOW - DAY)
    store.events.append([again])
    assert index.states["dave"].events == 3
    index.observe([again])
    assert index.states["dave"].events == 3


def test_consent_changes_in_lazy_mode() -> None:
    index = lazy(shop(synthetic_events()), resident=3)
    assert index.profile("carol", NOW).behaviour is None
    revoked = USERS[0].model_copy(update={"consent": {"personalization": False}})
    index.upsert_users([revoked])
    assert "alice" in index.declined() and index.profile("alice", NOW).behaviour is None
    index.upsert_users([USERS[0]])  # back: replayed from the log
    assert "alice" not in index.declined()
    assert index.profile("alice", NOW).behaviour is not None
    assert index.states["alice"].events == 7  # impression left out
    index.forget("carol")
    assert "carol" not in index.declined()


def test_lru_cache_bounds_and_negative_entries() -> None:
    calls: list[str] = []

    def load(key: str) -> int | None:
        calls.append(key)
        return None if key.startswith("x") else len(key)

    cache: LruCache[int] = LruCache(2, load)
    assert cache.get("a") == 1 and cache["bb"] == 2 and "ccc" in cache
    assert list(cache) == ["bb", "ccc"] and not cache.resident("a")  # "a" left first
    assert cache.get("x1") is None and "x1" not in cache
    assert calls.count("x1") == 1  # the miss is remembered
    cache.forget_absent("x1")
    assert cache.get("x1", 7) == 7 and calls.count("x1") == 2
    cache["x1"] = 5  # set: no longer absent
    assert cache["x1"] == 5 and len(cache) == 2
