"""Push trigger state and journal on SQLite and on PostgreSQL (real server, a schema
per test): the shared contract, and two push engines on one PostgreSQL database as two
processes would be (a timer survives a restart and is handled once; caps hold across
engines). SYNTHETIC data."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.push.conftest import T0, Clock, FakeItems, catalog, consenting, ev, push_settings
from tests.push.state_contract import StateContract

from shopcast.push.engine import PushEngine, open_storage, push_urls


class TestSqliteState(StateContract):
    @pytest.fixture
    def open_db(self, tmp_path: Path) -> Callable[[], Any]:
        from shopcast.push._sqlite import PushDatabase

        url = f"sqlite:///{tmp_path / 'push.db'}"
        return lambda: PushDatabase(url)


class TestPostgresState(StateContract):
    @pytest.fixture
    def open_db(self, postgres_url: str) -> Callable[[], Any]:
        from shopcast.push._pg import PgPushDatabase

        return lambda: PgPushDatabase(postgres_url)


def test_urls_put_everything_in_the_store_database_or_beside_its_file() -> None:
    settings = push_settings().push
    pg = "postgresql://u@h/db"
    assert push_urls(pg, settings) == (pg, pg)
    beside = "sqlite:///x.push.db"  # not x.db itself: SQLite has one writer per file
    assert push_urls("sqlite:///x.db", settings) == (beside, beside)
    assert push_urls("sqlite:////abs/x", settings)[0] == "sqlite:////abs/x.push"
    assert push_urls("memory://", settings) == ("memory://", "sqlite://:memory:")


def _engine(url: str, clock: Clock, **push: Any) -> PushEngine:
    outbox, state, journal = open_storage(url, url)
    engine = PushEngine(
        push_settings(**push),
        outbox=outbox,
        state=state,
        journal=journal,
        items=FakeItems(catalog()),
        users=consenting("u1", "u2").get,
        clock=clock,
    )
    assert state.shares(outbox) and state.shares(journal)  # one transaction per round
    engine.seed_items(catalog())
    return engine


def test_postgres_timers_durable_and_handled_once(postgres_url: str) -> None:
    clock = Clock()
    one = _engine(postgres_url, clock, triggers={"cart_abandonment": {"delay": 60}})
    one.observe([ev("add_to_cart", "s1", ts=T0)])
    assert [t.trigger for t in one.state.timers("u1")] == ["cart_abandonment"]
    one.close()  # the process stops; the timer is in PostgreSQL, not in its memory
    two = _engine(postgres_url, clock, triggers={"cart_abandonment": {"delay": 60}})
    three = _engine(postgres_url, clock, triggers={"cart_abandonment": {"delay": 60}})
    try:
        clock.advance(61)
        results: list[list[Any]] = [[], []]
        start = threading.Barrier(2)

        def tick(i: int, engine: PushEngine) -> None:
            start.wait()
            results[i] = engine.tick()

        threads = [threading.Thread(target=tick, args=(i, e)) for i, e in enumerate((two, three))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        decided = [v for r in results for v in r]
        assert [v.candidate.trigger for v in decided] == ["cart_abandonment"]
        assert len(two.outbox.history("u1")) == 1
        assert two.state.timers("u1") == []
    finally:
        two.close()
        three.close()


def test_postgres_caps_hold_across_engines(postgres_url: str) -> None:
    """Two engines (processes) decide for the same shopper at the same moment: with a
    daily cap of one push, exactly one is sent (the per-user lock serializes them)."""
    clock = Clock()
    push = {"daily_cap": 1, "triggers": {"price_drop": {"holdout": 0.0}}}
    a, b = _engine(postgres_url, clock, **push), _engine(postgres_url, clock, **push)
    try:
        a.observe([ev("view", "s1", ts=T0), ev("view", "t1", ts=T0)])
        items = {i.item_id: i for i in catalog()}
        cheaper = [
            items["s1"].model_copy(update={"price": items["s1"].price * 0.5}),
            items["t1"].model_copy(update={"price": items["t1"].price * 0.5}),
        ]
        outcomes: list[list[str]] = [[], []]
        start = threading.Barrier(2)

        def run(i: int, engine: PushEngine, item: Any) -> None:
            start.wait()
            outcomes[i] = [v.outcome for v in engine.observe_items([item])]

        threads = [
            threading.Thread(target=run, args=(0, a, cheaper[0])),
            threading.Thread(target=run, args=(1, b, cheaper[1])),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        flat = sorted(o for part in outcomes for o in part)
        assert flat == ["sent", "suppressed"], flat
        assert len(a.outbox.history("u1")) == 1
        assert a.metrics()["suppressed"] == {"daily_cap": 1}
    finally:
        a.close()
        b.close()
