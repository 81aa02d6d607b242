"""Both outbox backends pass the contract (``outbox_contract.OutboxContract``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.push.outbox_contract import OutboxContract

from shopcast.errors import UnknownBackendError
from shopcast.push._outbox_memory import MemoryOutbox
from shopcast.push._outbox_sql import SqliteOutbox
from shopcast.push.outbox import Outbox, open_outbox


class TestSqliteOutbox(OutboxContract):
    durable = True

    @pytest.fixture
    def open_outbox(self, tmp_path: Path) -> Callable[[], Outbox]:
        url = f"sqlite:///{tmp_path / 'push.db'}"
        return lambda: open_outbox(url)


class TestMemoryOutbox(OutboxContract):
    @pytest.fixture
    def open_outbox(self) -> Callable[[], Outbox]:
        box = MemoryOutbox()
        return lambda: box


def test_backend_by_url(tmp_path: Path) -> None:
    box = open_outbox(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(box, SqliteOutbox)
    box.close()
    assert isinstance(open_outbox("memory://"), MemoryOutbox)
    with pytest.raises(UnknownBackendError):
        open_outbox("mongodb://localhost/x")


def test_shares_the_store_file(tmp_path: Path) -> None:
    """The push tables live beside the event log in the store's file."""
    from shopcast.domain import Event
    from shopcast.storage import open_store

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    store = open_store(url)
    box = open_outbox(url)
    store.events.append([Event(type="view", user_id="u", item_id="i", timestamp=1.0)])
    box.enqueue([], [])
    assert store.events.count() == 1
    box.close()
    store.close()
    store = open_store(url)  # the store's own schema check still passes
    assert store.events.count() == 1
    store.close()
