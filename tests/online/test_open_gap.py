"""An engine opened while other processes ingest learns every event exactly once (real
Redis, the SYNTHETIC simulated shop).

"Process A" is this test writing to the shared log and the stream; "process B" is an
``Engine`` opened on the same log (what an API process does at start or when a tenant is
first requested) with its ``OnlineSync``. Three batches:

- E1 committed before B reads the log, published after B took its stream position (a
  slow publisher): in B's log read, and on the stream B follows: learned once;
- MID committed while B opens, after its profiles read the log and before its models
  catch up: B's models stop where its profiles did, both learn MID from the stream;
- E2 committed and published after B read the log, before B follows the stream (the
  gap a process that followed from "now" would miss);
- E3 while B follows.

B's online-learned popularity and profiles then equal those of an engine opened after
everything, which read it all from the log.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from tests.online.conftest import prepare_shop

from shopcast.domain import Event
from shopcast.online import open_online
from shopcast.online.sync import OnlineSync
from shopcast.serving.engine import Engine
from shopcast.simulate import SimulatedShop
from shopcast.storage import Store, open_store


def batch(tag: str, n: int, items: list[str], t0: float) -> list[Event]:
    return [
        Event(
            event_id=f"{tag}-{i}",
            type="purchase" if i % 3 == 0 else "view",
            user_id=f"{tag}-user{i % 4}",
            item_id=items[(i * 5) % len(items)],
            timestamp=t0 + i,
        )
        for i in range(n)
    ]


def commit(store: Store, events: list[Event]) -> list[Event]:
    result = store.events.append(events)
    return [events[i] for i in result.stored]


def same(a: object, b: object, path: str = "") -> None:
    """Equal, floats to rounding (learned online one event at a time vs in one batch)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{k}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


def popularity(engine: Engine) -> np.ndarray:
    return np.asarray(engine.bundle.models["popularity"].scores_)  # type: ignore[attr-defined]


def test_engine_opened_mid_stream_learns_each_event_once(
    redis_url: str, tmp_path: Path, small_shop: SimulatedShop, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = prepare_shop(tmp_path, small_shop)
    settings = base.model_copy(update={"state": base.state.model_copy(update={"url": redis_url})})
    writer = open_store(settings.database_url)
    items = [it.item_id for it in small_shop.items[:12]]
    t0 = float(small_shop.events["timestamp"].cast(float).max()) + 1.0
    tags = ("e1", "mid", "e2", "e3")
    e1, mid, e2, e3 = (batch(tag, 30, items, t0 + 100 * k) for k, tag in enumerate(tags))
    bus = open_online(settings.state, lambda _s, _n: [], length=5).bus  # "process A"
    assert bus is not None
    prepare = Engine._prepare

    def mid_open(engine: Engine, *args: object, **kwargs: object) -> object:
        """B's profiles have read the log, its models have not: MID is committed now."""
        if not mid_done:
            mid_done.append(True)
            bus.publish(commit(writer, mid), "process-a")
        return prepare(engine, *args, **kwargs)  # type: ignore[arg-type]

    mid_done: list[bool] = []
    monkeypatch.setattr(Engine, "_prepare", mid_open)
    stored_e1 = commit(writer, e1)  # committed before B reads the log ...
    b = Engine.open(open_store(settings.database_url), settings)  # "process B" opens
    monkeypatch.setattr(Engine, "_prepare", prepare)
    assert mid_done
    assert b.stream_start is not None
    bus.publish(stored_e1, "process-a")  # ... published after B took its position
    bus.publish(commit(writer, e2), "process-a")  # the gap: after B's read, before it follows
    sync = OnlineSync(b, lambda: None).start()
    try:
        deadline = time.monotonic() + 30
        while sync.followed < len(mid) + len(e2) and time.monotonic() < deadline:
            time.sleep(0.05)
        bus.publish(commit(writer, e3), "process-a")
        while sync.followed < len(mid) + len(e2) + len(e3) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # anything more (E1 twice) would arrive now
    finally:
        sync.stop()
    assert sync.followed == len(mid) + len(e2) + len(e3)  # E1 was in the log B read: not again
    fresh = Engine.open(open_store(settings.database_url), settings)  # read it all from the log
    np.testing.assert_allclose(popularity(b), popularity(fresh), rtol=1e-9)
    for user in ("e1-user0", "mid-user3", "e2-user1", "e3-user2"):
        now = t0 + 1000.0
        same(
            b.profiles.profile(user, now).model_dump(),
            fresh.profiles.profile(user, now).model_dump(),
        )
    for engine in (b, fresh):
        engine.close()
    writer.close()


def test_a_process_following_from_now_would_miss_the_gap(
    redis_url: str, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    """The comparison above can fail: without the recorded position, E2 is missed."""
    base = prepare_shop(tmp_path, small_shop)
    settings = base.model_copy(update={"state": base.state.model_copy(update={"url": redis_url})})
    writer = open_store(settings.database_url)
    items = [it.item_id for it in small_shop.items[:12]]
    t0 = float(small_shop.events["timestamp"].cast(float).max()) + 1.0
    b = Engine.open(open_store(settings.database_url), settings)
    b.stream_start = None  # what OnlineSync did before: follow from the newest id on start
    bus = b.online.bus
    assert bus is not None
    bus.publish(commit(writer, batch("e2", 30, items, t0)), "process-a")
    sync = OnlineSync(b, lambda: None).start()
    time.sleep(1.0)
    sync.stop()
    fresh = Engine.open(open_store(settings.database_url), settings)
    assert sync.followed == 0
    assert not np.allclose(popularity(b), popularity(fresh), rtol=1e-9)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(popularity(b), popularity(fresh), rtol=1e-9)
    for engine in (b, fresh):
        engine.close()
    writer.close()
