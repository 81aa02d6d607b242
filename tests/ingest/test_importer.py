"""Bulk import into the memory store. Data here is SYNTHETIC."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pytest

from shopcast.domain import Item, User
from shopcast.ingest.datasets import DatasetFrames
from shopcast.ingest.importer import import_events, import_frames, import_items, import_users
from shopcast.storage import Store, open_store


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store("memory://")
    yield s
    s.close()


def events(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "type": ["view"] * n,
            "user_id": [f"u{i % 3}" for i in range(n)],
            "item_id": [f"i{i % 5}" for i in range(n)],
            "timestamp": [1_600_000_000 + i for i in range(n)],
        }
    )


def test_import_counts_accepted_rejected_and_duplicates_on_reimport(store: Store) -> None:
    raw = pl.concat(
        [events(10), pl.DataFrame({"type": ["view"], "item_id": ["x"]})], how="diagonal_relaxed"
    )
    first = import_events(store, raw)
    assert (first.rows_read, first.accepted, first.duplicates) == (11, 10, 0)
    assert first.rejected == {"user_id: one of user_id or session_id is required": 1}
    again = import_events(store, raw)
    assert (again.accepted, again.duplicates) == (0, 10)
    assert store.events.count() == 10
    assert store.events.scan(subject="u:u1")[0][1].item_id == "i1"


def test_chunks_report_progress_and_catch_duplicates_across_chunks(store: Store) -> None:
    raw = pl.concat([events(7), events(7).slice(2, 3)])
    seen: list[int] = []
    summary = import_events(store, raw, progress=seen.append, chunk_rows=3)
    assert seen == [3, 6, 9, 10]
    assert (summary.accepted, summary.duplicates) == (7, 3)


def test_ids_derived_from_content_deduplicate(store: Store) -> None:
    raw = events(4).drop("event_id")
    assert import_events(store, raw).accepted == 4
    assert import_events(store, raw).duplicates == 4


def test_missing_timestamps_share_the_import_time(store: Store) -> None:
    summary = import_events(store, events(3).drop("timestamp"), now=1_650_000_000.0)
    assert summary.accepted == 3
    assert {e.timestamp for _, e in store.events.scan()} == {1_650_000_000.0}


def test_summary_as_dict_and_rate(store: Store) -> None:
    summary = import_events(store, events(5))
    d = summary.as_dict()
    assert set(d) >= {"rows_read", "accepted", "duplicates", "rejected", "seconds", "rows_per_s"}
    assert d["rows_per_s"] == pytest.approx(5 / summary.seconds)
    assert set(summary.timings) == {"clean", "store"}


def test_items_and_users_upsert_the_last_of_each_id(store: Store) -> None:
    items = [Item(item_id="a", title="old"), Item(item_id="b"), Item(item_id="a", title="new")]
    summary = import_items(store, items, rejected={"price: negative": 2})
    assert (summary.rows_read, summary.accepted, summary.duplicates) == (5, 2, 1)
    assert summary.items == 2
    item = store.items.get("a")
    assert item is not None and item.title == "new"
    assert import_users(store, [User(user_id="u", region="UK")]).users == 1
    assert store.users.count() == 1


def test_import_frames_counts_skipped_source_rows_as_rejected(store: Store) -> None:
    frames = DatasetFrames(
        events=events(4),
        items=[Item(item_id=f"i{i}") for i in range(5)],
        users=[User(user_id=f"u{i}") for i in range(3)],
        report={"rows_read": 6},
        skipped={"InvoiceNo: cancellation (C…)": 2},
    )
    summary = import_frames(store, frames)
    assert (summary.rows_read, summary.accepted, summary.items, summary.users) == (6, 4, 5, 3)
    assert summary.rejected == {"InvoiceNo: cancellation (C…)": 2}
