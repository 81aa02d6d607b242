"""One contract for every online-state backend: in-process memory and real Redis.

The Redis variants use the ``redis_url`` fixture (a unique key prefix on the shared
server; skipped locally when Redis is down, a failure in CI). Events are SYNTHETIC.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from shopcast.config import StateSettings
from shopcast.domain import Event, EventType
from shopcast.online import Counters, OnlineState, open_online

BACKENDS = ["memory", "redis"]


class FakeLog:
    """The durable log the sessions load from (as ``Engine._history`` does)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def append(self, *events: Event) -> list[Event]:
        self.events.extend(events)
        return list(events)

    def __call__(self, subject: str, limit: int) -> list[Event]:
        return [e for e in self.events if e.subject == subject][-limit:]


def ev(
    eid: str,
    item: str,
    kind: str = "view",
    user: str | None = "u1",
    ts: float = 1000.0,
    **kw: object,
) -> Event:
    session = kw.pop("session_id", None)
    return Event(
        event_id=eid,
        type=kind,
        user_id=user,
        session_id=session,
        item_id=item,
        timestamp=ts,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(params=BACKENDS)
def make_state(request: pytest.FixtureRequest) -> Iterator[Callable[[FakeLog], OnlineState]]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    opened: list[OnlineState] = []

    def make(log: FakeLog, length: int = 5) -> OnlineState:
        state = open_online(StateSettings(url=url, covisit_window=3), log, length=length)
        opened.append(state)
        return state

    yield make
    for state in opened:
        state.close()


# -- live sessions -------------------------------------------------------------------------


def test_get_loads_the_log_once_then_follows_observe(
    make_state: Callable[..., OnlineState],
) -> None:
    log = FakeLog()
    log.append(ev("e1", "a", ts=1), ev("e2", "b", ts=2))
    sessions = make_state(log).sessions
    assert list(sessions.get("u:u1").items) == ["a", "b"]
    sessions.observe(log.append(ev("e3", "c", "add_to_cart", ts=3)))
    live = sessions.get("u:u1")
    assert list(live.items) == ["a", "b", "c"]
    assert list(live.types) == [EventType.VIEW, EventType.VIEW, EventType.ADD_TO_CART]
    assert live.cart == {"c": 3.0}
    assert not live.degraded


def test_observe_before_first_get_is_not_lost(make_state: Callable[..., OnlineState]) -> None:
    log = FakeLog()
    log.append(ev("e1", "a", ts=1))
    sessions = make_state(log).sessions
    sessions.observe(log.append(ev("e2", "b", ts=2)))  # nobody loaded u1 yet
    assert list(sessions.get("u:u1").items) == ["a", "b"]  # no duplicate of e2 either


def test_length_bound_and_duplicates(make_state: Callable[..., OnlineState]) -> None:
    log = FakeLog()
    sessions = make_state(log, length=3).sessions
    sessions.get("u:u1")
    batch = log.append(*(ev(f"e{i}", f"i{i}", ts=i) for i in range(6)))
    sessions.observe(batch)
    sessions.observe(batch[-2:])  # redelivered: ignored
    assert list(sessions.get("u:u1").items) == ["i3", "i4", "i5"]


def test_purchases_cart_and_ignored_types(make_state: Callable[..., OnlineState]) -> None:
    log = FakeLog()
    sessions = make_state(log).sessions
    sessions.get("u:u1")
    sessions.observe(
        log.append(
            ev("e1", "a", "add_to_cart", ts=1),
            ev("e2", "b", "add_to_cart", ts=2),
            ev("e3", "a", "purchase", ts=3),
            ev("e4", "b", "remove_from_cart", ts=4),
            ev("e5", "z", "impression", ts=5),
        )
    )
    live = sessions.get("u:u1")
    assert live.cart == {}
    assert live.purchases == {"a": [3.0]}
    assert "z" not in live.items
    assert live.purchased == {"a"}


def test_shown_pages(make_state: Callable[..., OnlineState]) -> None:
    sessions = make_state(FakeLog()).sessions
    sessions.remember_shown("u:u1", "home", ["a", "b"], 1)
    sessions.remember_shown("u:u1", "home", ["c"], 2)
    sessions.remember_shown("u:u1", "cart", [], 1)
    assert sessions.get("u:u1").shown == {"home": ["a", "b", "c"], "cart": []}
    sessions.remember_shown("u:u1", "home", ["d"], 1)  # a new listing
    assert sessions.get("u:u1").shown["home"] == ["d"]


def test_merge_forget_and_len(make_state: Callable[..., OnlineState]) -> None:
    log = FakeLog()
    log.append(ev("e1", "a", ts=1), ev("e2", "b", user=None, session_id="s9", ts=2))
    sessions = make_state(log).sessions
    sessions.get("u:u1")
    sessions.get("s:s9")
    assert len(sessions) == 2
    sessions.merge("s:s9", "u:u1")
    assert list(sessions.get("u:u1").items) == ["a", "b"]
    assert len(sessions) == 1
    sessions.forget("u:u1")
    assert len(sessions) == 0
    log.events.clear()  # erased from the log too
    assert list(sessions.get("u:u1").items) == []


def test_concurrent_observers_lose_nothing(make_state: Callable[..., OnlineState]) -> None:
    log = FakeLog()
    state = make_state(log, length=200)
    state.sessions.get("u:u1")
    batches = [[ev(f"t{t}-{i}", f"i{t}-{i}", ts=t * 100 + i) for i in range(20)] for t in range(4)]
    for batch in batches:
        log.append(*batch)

    def run(batch: list[Event]) -> None:
        for event in batch:
            state.sessions.observe([event])

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(state.sessions.get("u:u1").items) == 80


# -- counters ------------------------------------------------------------------------------


def counters(make_state: Callable[..., OnlineState]) -> Counters:
    return make_state(FakeLog()).counters


def test_incr_and_get(make_state: Callable[..., OnlineState]) -> None:
    c = counters(make_state)
    assert c.get("push:sent") == 0
    assert c.incr("push:sent") == 1
    assert c.incr("push:sent", 4, ttl_s=60) == 5
    assert c.get("push:sent") == 5


def test_take_is_a_sliding_window_cap(make_state: Callable[..., OnlineState]) -> None:
    c = counters(make_state)
    assert [c.take("cap:u1", 2, 100, now=t) for t in (0, 10, 20)] == [True, True, False]
    assert c.take("cap:u1", 2, 100, now=100.5)  # the use at 0 left the window
    assert not c.take("cap:u1", 2, 100, now=105)
    assert c.take("cap:u2", 2, 100, now=105)  # per key


def test_take_under_concurrency_never_exceeds_the_limit(
    make_state: Callable[..., OnlineState],
) -> None:
    c = counters(make_state)
    granted: list[bool] = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(10):
            ok = c.take("cap:race", 7, 3600)
            with lock:
                granted.append(ok)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 7


def test_apply_event_once_popularity_and_covisitation(
    make_state: Callable[..., OnlineState],
) -> None:
    c = counters(make_state)
    day = 86_400.0 * 20_000
    assert c.apply_event("e1", "u:1", "a", 1.0, day + 10)
    assert c.apply_event("e2", "u:1", "b", 3.0, day + 20)
    assert c.apply_event("e3", "u:1", "c", 1.0, day + 30)
    assert not c.apply_event("e3", "u:1", "c", 1.0, day + 30)  # redelivered
    assert c.apply_event("e4", "u:1", "a", 1.0, day + 40)  # a again: no self pair
    assert c.apply_event("e5", "u:2", "a", 5.0, day - 10)  # the day before
    assert c.applied("e1") and not c.applied("nope")
    assert c.popular(10, days=1, now=day + 50) == [("b", 3.0), ("a", 2.0), ("c", 1.0)]
    assert c.popular(1, days=2, now=day + 50) == [("a", 7.0)]
    # b: +3 with a (e2); c: +1 with a, b (e3); a: +1 with b, c (e4)
    assert c.covisited("a", 10) == [("b", 4.0), ("c", 2.0)]
    assert c.covisited("b", 10) == [("a", 4.0), ("c", 1.0)]
    assert c.covisited("c", 10) == [("a", 2.0), ("b", 1.0)]
    assert c.covisited("zzz", 10) == []


def test_covisitation_window_is_bounded(make_state: Callable[..., OnlineState]) -> None:
    c = counters(make_state)  # covisit_window = 3
    for i, item in enumerate("abcde"):
        c.apply_event(f"e{i}", "u:1", item, 1.0, 1000.0 + i)
    assert [k for k, _ in c.covisited("e", 10)] == ["b", "c", "d"]  # not a: out of the window


def test_tenants_get_their_own_key_prefix() -> None:
    from shopcast.config import Settings
    from shopcast.online import with_namespace
    from shopcast.privacy.tenants import tenant_settings

    base = Settings(
        database_url="sqlite:///x.db", state={"url": "redis://127.0.0.1:6379/0?prefix=shop:"}
    )
    assert (
        tenant_settings(base, "acme").state.url == "redis://127.0.0.1:6379/0?prefix=shop%3Aacme%3A"
    )
    assert with_namespace("memory://", "acme") == "memory://"
    from shopcast.online._redis import split_url

    assert split_url(tenant_settings(base, "acme").state.url)[1] == "shop:acme:"


def test_embedded_engine_counts_online_aggregates_in_process(shop_client: object) -> None:
    """Without Redis there is no worker: the API process counts the aggregates itself."""
    from fastapi.testclient import TestClient

    assert isinstance(shop_client, TestClient)
    posted = shop_client.post(
        "/v1/events",
        json=[
            {"event_id": "agg-1", "type": "view", "user_id": "agg", "item_id": "sim-00001"},
            {"event_id": "agg-2", "type": "add_to_cart", "user_id": "agg", "item_id": "sim-00002"},
        ],
    )
    assert posted.status_code == 202
    counters = shop_client.app.state.engine.online.counters  # type: ignore[attr-defined]
    assert counters.applied("agg-1") and counters.applied("agg-2")
    assert dict(counters.covisited("sim-00002", 5)) == {"sim-00001": 3.0}
