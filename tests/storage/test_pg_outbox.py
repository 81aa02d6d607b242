"""The PostgreSQL push outbox passes the push engine's outbox contract."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.push.outbox_contract import OutboxContract

from shopcast.push._outbox_sql import PostgresOutbox
from shopcast.push.outbox import Outbox, open_outbox


class TestPostgresOutbox(OutboxContract):
    durable = True

    @pytest.fixture
    def open_outbox(self, postgres_url: str) -> Callable[[], Outbox]:
        return lambda: open_outbox(postgres_url)


def test_the_outbox_shares_the_stores_schema(postgres_url: str) -> None:
    from shopcast.domain import Event
    from shopcast.storage import open_store

    box = open_outbox(postgres_url)
    assert isinstance(box, PostgresOutbox)
    store = open_store(postgres_url)
    try:
        store.events.append([Event(type="view", user_id="u", item_id="i", timestamp=1.0)])
        box.enqueue([], [])
        assert store.events.count() == 1
    finally:
        box.close()
        store.close()


def test_a_postgresql_store_puts_the_push_outbox_beside_it() -> None:
    from shopcast.config import PushSettings, Settings
    from shopcast.push.engine import push_urls

    url = "postgresql://postgres@127.0.0.1:5432/test"
    # the trigger state and journal are in the same database (migration 0003)
    assert push_urls(url, PushSettings()) == (url, url)
    other = Settings(push={"outbox_url": "postgresql://h/db"}).push
    assert push_urls("sqlite:///x.db", other) == ("postgresql://h/db", "postgresql://h/db")
