"""Live sessions warmed at start-up (one columnar pass over the log) equal the ones a
request would load from the log on a miss, and a shopper's impressions no longer push
their real events out of the loaded history (SYNTHETIC events)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from shopcast.config import RecommendSettings, Settings
from shopcast.domain import Event, EventType
from shopcast.serving.engine import SESSION_EVENT_TYPES, Engine
from shopcast.serving.state import LiveSession, MemorySessions
from shopcast.storage import Store, open_store
from shopcast.training.bundle import save_bundle, train_bundle

T0 = 1_767_225_600.0
KINDS = ["view", "view", "click", "add_to_cart", "remove_from_cart", "purchase", "impression"]


def _synthetic_log(store: Store, seed: int, users: int = 12) -> None:
    rng = random.Random(seed)
    events = []
    for _ in range(900):
        user = f"w{rng.randrange(users)}"
        kind = rng.choice(KINDS)
        events.append(
            Event(
                type=kind,
                user_id=user,
                item_id=f"i{rng.randrange(15)}",
                # equal timestamps on purpose: ties are broken by seq, as in the log
                timestamp=T0 + rng.randrange(300),
                recommendation_id="r1" if kind == "impression" else None,
            )
        )
    events.append(Event(type="search", user_id="w0", query="mug", timestamp=T0 + 400))
    events.append(Event(type="view", session_id="anon", item_id="i1", timestamp=T0))
    store.events.append(events)


def _state(session: LiveSession) -> tuple[object, ...]:
    return (
        list(session.items),
        list(session.types),
        list(session.ts),
        list(session.event_ids),
        list(session.purchases.items()),
        sorted(session.cart.items()),
    )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("length", [4, 20])
def test_warm_builds_what_a_miss_loads(tmp_path: Path, seed: int, length: int) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    _synthetic_log(store, seed)

    def history(subject: str, limit: int) -> list[Event]:
        rows = store.events.scan(
            subject=subject, limit=limit, newest_first=True, types=SESSION_EVENT_TYPES
        )
        return [e for _, e in reversed(rows)]

    lazy = MemorySessions(history, length=length)
    warm = MemorySessions(lambda subject, limit: pytest.fail(f"{subject} loaded"), length=length)
    assert warm.warm(store.events.frame()) == 12
    assert len(warm) == 12
    for u in range(12):
        subject = f"u:w{u}"
        assert _state(warm.get(subject)) == _state(lazy.get(subject)), subject
    assert warm.warm(store.events.frame()) == 0  # sessions in memory are left alone
    store.close()


def test_warm_keeps_the_most_recent_users_within_capacity(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.events.append(
        [Event(type="view", user_id=f"c{u}", item_id="i1", timestamp=T0 + u) for u in range(10)]
    )
    sessions = MemorySessions(lambda subject, limit: [], capacity=3)
    assert sessions.warm(store.events.frame()) == 3
    assert {f"u:c{u}" for u in (7, 8, 9)} == {s for s in sessions._sessions}
    store.close()


def test_the_engine_warms_sessions_and_skips_impressions_on_a_miss(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        model_dir=tmp_path / "models",
        recommend=RecommendSettings(log_impressions=False, session_length=3),
    )
    store = open_store(settings.database_url)
    history = [
        Event(type="view", user_id=f"p{u}", item_id=item, timestamp=T0 + u + n)
        for u in range(4)
        for n, item in enumerate("abc")
    ]
    store.events.append(history)
    save_bundle(train_bundle(store, settings.recommend), settings.model_dir)
    # 40 impressions after p0's views: more than the 10 * length rows a miss reads
    store.events.append(
        [
            Event(type="impression", user_id="p0", item_id="b", timestamp=T0 + 100 + n)
            for n in range(40)
        ]
    )
    engine = Engine.open(store, settings)
    assert len(engine.sessions) == 4  # warmed at start-up
    assert list(engine.sessions.get("u:p0").items) == ["a", "b", "c"]
    engine.sessions.forget("u:p0")
    reloaded = engine.sessions.get("u:p0")  # a miss: read from the log
    assert list(reloaded.items) == ["a", "b", "c"]
    assert set(reloaded.types) == {EventType.VIEW}
    engine.close()
    store.close()
