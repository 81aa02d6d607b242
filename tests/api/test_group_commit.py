"""Group commit of event posts (``shopcast.api.ingest``): concurrent posts share one
transaction, each answered only after its events are stored, duplicates as before."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient

from shopcast.api.ingest import GroupCommit
from shopcast.domain import Event
from shopcast.errors import StorageError, StorageUnavailableError
from shopcast.storage import AppendResult, append_batches, open_store

T = TypeVar("T")


def _ev(event_id: str, user: str = "u1") -> Event:
    return Event(event_id=event_id, type="view", user_id=user, item_id="i1", timestamp=1.7e9)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_concurrent_posts_share_a_commit_and_get_their_own_answers() -> None:
    store = open_store("memory://")
    groups: list[int] = []
    stored_when_answered: list[bool] = []

    def append(batches: list[list[Event]]) -> list[AppendResult]:
        groups.append(len(batches))
        time.sleep(0.01)  # a commit takes time: the next posts queue meanwhile
        return append_batches(store.events, batches)

    group = GroupCommit(append, wait_s=0.002)

    async def post(n: int) -> AppendResult:
        batch = [_ev(f"e{n}-{j}") for j in range(3)] + [_ev("shared")]
        result = await group.submit(batch)
        ids = {e.event_id for _, e in store.events.scan()}
        stored_when_answered.append(all(e.event_id in ids for e in batch))
        return result

    async def main() -> list[AppendResult]:
        return list(await asyncio.gather(*(post(n) for n in range(40))))

    results = _run(main())
    assert all(stored_when_answered)  # nothing answered before it was stored
    assert sum(groups) == 40 and len(groups) < 40 and max(groups) > 1  # shared commits
    assert group.stats.posts == 40 and group.stats.groups == len(groups)
    assert sum(r.accepted for r in results) == 40 * 3 + 1 == store.events.count()
    assert sum(r.duplicates for r in results) == 39  # "shared" stored once, by one post
    assert [r.accepted for r in results].count(4) == 1


def test_one_bad_batch_fails_alone_and_an_unreachable_store_fails_all() -> None:
    store = open_store("memory://")
    calls: list[int] = []

    def append(batches: list[list[Event]]) -> list[AppendResult]:
        calls.append(len(batches))
        if any(e.event_id == "bad" for batch in batches for e in batch):
            raise StorageError("cannot store 'bad'")
        return append_batches(store.events, batches)

    group = GroupCommit(append, wait_s=0.01)

    async def main() -> list[object]:
        posts = [[_ev("a")], [_ev("bad")], [_ev("b")]]
        return list(await asyncio.gather(*(group.submit(p) for p in posts), return_exceptions=True))

    ok_a, bad, ok_b = _run(main())
    assert isinstance(bad, StorageError)
    assert isinstance(ok_a, AppendResult) and ok_a.accepted == 1
    assert isinstance(ok_b, AppendResult) and ok_b.accepted == 1
    assert calls == [3, 1, 1, 1] and group.stats.retried_alone == 3
    assert store.events.count() == 2

    def down(batches: list[list[Event]]) -> list[AppendResult]:
        calls.append(-len(batches))
        raise StorageUnavailableError("database down", 1.0)

    group = GroupCommit(down, wait_s=0.01)

    async def all_fail() -> list[object]:
        return list(
            await asyncio.gather(
                *(group.submit([_ev(f"x{n}")]) for n in range(3)), return_exceptions=True
            )
        )

    calls.clear()
    assert all(isinstance(r, StorageUnavailableError) for r in _run(all_fail()))
    assert calls == [-3]  # not retried one by one: the store is down for all


def test_an_engine_that_cannot_learn_fails_the_posts_without_a_second_append() -> None:
    store = open_store("memory://")
    appends: list[int] = []

    def append(batches: list[list[Event]]) -> list[AppendResult]:
        appends.append(len(batches))
        return append_batches(store.events, batches)

    def apply(batches: list[list[Event]], results: Sequence[AppendResult]) -> None:
        raise RuntimeError("engine broken")

    group = GroupCommit(append, apply, wait_s=0.01)

    async def main() -> list[object]:
        return list(
            await asyncio.gather(
                *(group.submit([_ev(f"y{n}")]) for n in range(3)), return_exceptions=True
            )
        )

    assert all(isinstance(r, RuntimeError) for r in _run(main()))
    assert appends == [3] and store.events.count() == 3


def test_a_full_group_does_not_wait() -> None:
    store = open_store("memory://")
    group = GroupCommit(lambda b: append_batches(store.events, b), wait_s=5.0, max_events=4)

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(group.submit([_ev(f"z{n}")]) for n in range(4)))
        return time.perf_counter() - started

    assert _run(main()) < 2.0  # not the 5 s wait: 4 events filled the group


def test_concurrent_http_posts_are_group_committed(client: TestClient) -> None:
    """Posts from many threads at once: each 202 counts its own events, an id posted by
    several clients is accepted by exactly one, every event is stored and learned."""

    def post(n: int) -> dict[str, int]:
        batch = [
            {"event_id": f"p{n}-{j}", "type": "view", "user_id": f"u{n % 5}", "item_id": f"i{j}"}
            for j in range(4)
        ] + [{"event_id": "same", "type": "view", "user_id": "u0", "item_id": "i0"}]
        r = client.post("/v1/events", json=batch)
        assert r.status_code == 202, r.text
        body = r.json()
        assert len(body["event_ids"]) == 5
        return {"accepted": body["accepted"], "duplicates": body["duplicates"]}

    barrier = threading.Barrier(16)

    def start_together(n: int) -> dict[str, int]:
        barrier.wait()
        return post(n)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(start_together, range(16)))
    assert sum(a["accepted"] for a in answers) == 16 * 4 + 1
    assert sum(a["duplicates"] for a in answers) == 15
    store = client.app.state.store  # type: ignore[attr-defined]
    assert store.events.count() == 16 * 4 + 1
    stats = client.app.state.tenants.get("default").ingest.stats  # type: ignore[attr-defined]
    assert stats.posts == 16 and stats.groups < 16  # some posts shared a commit
    engine = client.app.state.engine  # type: ignore[attr-defined]
    session = engine.sessions.get("u:u1")  # learned with the group, before the 202s
    assert set(session.event_ids) == {f"p{n}-{j}" for n in (1, 6, 11) for j in range(4)}


@pytest.mark.parametrize("wait_s", [0.0, 0.001])
def test_sequential_posts_still_dedup_and_answer(client: TestClient, wait_s: float) -> None:
    client.app.state.tenants.get("default").settings.api.group_commit_wait_s = wait_s  # type: ignore[attr-defined]
    first = client.post(
        "/v1/events", json=[{"event_id": "q", "type": "view", "user_id": "u", "item_id": "i"}]
    )
    again = client.post(
        "/v1/events", json=[{"event_id": "q", "type": "view", "user_id": "u", "item_id": "i"}]
    )
    assert first.json()["accepted"] == 1 and again.json()["duplicates"] == 1
