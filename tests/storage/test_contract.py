"""The storage contract: every backend passes ``StoreContract``; SQLite-only checks follow."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from shopcast.domain import Event, Item, User
from shopcast.errors import StorageError, UnknownBackendError, ValidationError
from shopcast.storage import EVENT_COLUMNS, AppendResult, Store, _sqlite, append_batches, open_store
from shopcast.storage._memory import MemoryStore
from shopcast.storage._sqlite import SCHEMA_VERSION, SqliteStore

FRAME_DTYPES = {
    "seq": pl.Int64,
    "event_id": pl.String,
    "type": pl.String,
    "user_id": pl.String,
    "session_id": pl.String,
    "item_id": pl.String,
    "ts": pl.Float64,
    "value": pl.Float64,
    "quantity": pl.Float64,
    "price": pl.Float64,
    "query": pl.String,
    "recommendation_id": pl.String,
    "context": pl.String,
}


def view(event_id: str, user: str | None = "u1", ts: float = 1_700_000_000.0, **kw: Any) -> Event:
    return Event(event_id=event_id, type="view", user_id=user, item_id="i1", timestamp=ts, **kw)


def event_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A frame with every ``EVENT_COLUMNS`` column; unspecified values are null."""
    schema = {c: FRAME_DTYPES[c] for c in EVENT_COLUMNS}
    return pl.DataFrame([{c: r.get(c) for c in EVENT_COLUMNS} for r in rows], schema=schema)


def frame_row(event_id: str, ts: float, user: str = "u1") -> dict[str, Any]:
    return {"event_id": event_id, "type": "view", "user_id": user, "item_id": "i1", "ts": ts}


def ids(pairs: list[tuple[int, Event]]) -> list[str | None]:
    return [e.event_id for _, e in pairs]


class StoreContract:
    """Behaviour every ``Store`` must have; subclasses supply the ``store`` fixture."""

    # --- events: append and deduplication -------------------------------------------

    def test_append_stores_events_with_increasing_seq(self, store: Store) -> None:
        result = store.events.append([view("a"), view("b"), view("c")])
        assert (result.accepted, result.duplicates, result.stored) == (3, 0, [0, 1, 2])
        assert store.events.count() == 3
        seqs = [seq for seq, _ in store.events.scan()]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        assert result.last_seq == seqs[-1]

    def test_duplicates_within_and_across_batches_are_counted_not_stored(
        self, store: Store
    ) -> None:
        first = store.events.append([view("a"), view("b"), view("a", ts=1_700_000_001.0)])
        assert (first.accepted, first.duplicates, first.stored) == (2, 1, [0, 1])
        second = store.events.append([view("b"), view("c"), view("c"), view("a")])
        assert (second.accepted, second.duplicates, second.stored) == (1, 3, [1])
        assert store.events.count() == 3
        # The first occurrence wins.
        assert {e.event_id: e.timestamp for _, e in store.events.scan()}["a"] == 1_700_000_000.0
        assert second.last_seq > first.last_seq

    def test_events_without_id_deduplicate_on_content(self, store: Store) -> None:
        same = {"type": "view", "user_id": "u1", "item_id": "i1", "timestamp": 1_700_000_000}
        result = store.events.append([Event(**same), Event(**same)])
        assert (result.accepted, result.duplicates) == (1, 1)
        assert store.events.append([Event(**same)]).duplicates == 1

    def test_empty_append_reports_the_current_last_seq(self, store: Store) -> None:
        assert store.events.append([]) == AppendResult(0, 0, [], 0)
        last = store.events.append([view("a")]).last_seq
        assert store.events.append([]) == AppendResult(0, 0, [], last)
        assert store.events.append([view("a")]) == AppendResult(0, 1, [], last)

    def test_a_group_of_batches_answers_as_one_append_after_the_other(self, store: Store) -> None:
        """``append_batches`` (the group commit of concurrent event posts): one
        transaction, the same per-batch answers as successive appends, duplicates
        inside a batch, across the group and against the log counted as before."""
        store.events.append([view("old")])
        batches = [
            [view("a"), view("b"), view("a", ts=1_700_000_001.0)],
            [],
            [view("b"), view("c"), view("old"), view("c")],
            [view("d")],
        ]
        results = append_batches(store.events, batches)
        assert [(r.accepted, r.duplicates, r.stored) for r in results] == [
            (2, 1, [0, 1]),
            (0, 0, []),
            (1, 3, [1]),
            (1, 0, [0]),
        ]
        assert store.events.count() == 5
        seqs = [seq for seq, _ in store.events.scan()]
        assert {r.last_seq for r in results} == {max(seqs)}
        assert {e.event_id: e.timestamp for _, e in store.events.scan()}["a"] == 1_700_000_000.0
        # stored in group order: a, b, c, d after old
        assert ids(store.events.scan(after_seq=seqs[0])) == ["a", "b", "c", "d"]
        assert append_batches(store.events, []) == []
        assert append_batches(store.events, [[]]) == [AppendResult(0, 0, [], max(seqs))]

    def test_append_batches_falls_back_to_appends(self, store: Store) -> None:
        class Plain:  # a log without append_batches
            def __init__(self) -> None:
                self.calls = 0

            def append(self, events: list[Event]) -> AppendResult:
                self.calls += 1
                return store.events.append(events)

        plain = Plain()
        results = append_batches(plain, [[view("x")], [view("x"), view("y")]])  # type: ignore[arg-type]
        assert plain.calls == 2
        assert [(r.accepted, r.duplicates) for r in results] == [(1, 0), (1, 1)]

    def test_append_frame_into_empty_then_nonempty_log(self, store: Store) -> None:
        first = event_frame([frame_row(i, 1.7e9 + n) for n, i in enumerate("abac")])
        result = store.events.append_frame(first)
        assert (result.accepted, result.duplicates) == (3, 1)
        second = event_frame([frame_row(i, 1.8e9) for i in "cdde"])
        result = store.events.append_frame(second)
        assert (result.accepted, result.duplicates) == (2, 2)
        assert store.events.frame()["event_id"].to_list() == ["a", "b", "c", "d", "e"]
        assert result.last_seq == store.events.frame()["seq"].max()
        assert store.events.append([view("d")]).duplicates == 1
        # The indexes rebuilt after the first load still serve scans.
        assert ids(store.events.scan(subject="u:u1", newest_first=True, limit=2)) == ["e", "d"]

    def test_append_frame_of_many_rows_keeps_order_and_counts(self, store: Store) -> None:
        fresh = [f"e{n:03d}" for n in range(100)]
        first = event_frame([frame_row(i, 1.7e9) for i in fresh + fresh[::2]])
        assert store.events.append_frame(first).duplicates == 50
        more = [f"f{n:03d}" for n in range(100)]
        second = event_frame([frame_row(i, 1.8e9) for i in fresh[:50] + more])
        result = store.events.append_frame(second)
        assert (result.accepted, result.duplicates) == (100, 50)
        assert store.events.frame()["event_id"].to_list() == fresh + more

    def test_append_frame_casts_and_ignores_extra_columns(self, store: Store) -> None:
        frame = pl.DataFrame(
            {"event_id": ["a"], "type": ["view"], "user_id": ["u1"], "session_id": [None],
             "item_id": ["i1"], "ts": [1_700_000_000], "value": [None], "quantity": [2],
             "price": [None], "query": [None], "recommendation_id": [None],
             "context": [None], "extra": [1]}
        )  # fmt: skip
        assert store.events.append_frame(frame).accepted == 1
        [(_, event)] = store.events.scan()
        assert event == view("a", quantity=2.0)

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"drop": "ts"}, "ts"),
            ({"event_id": None}, "event_id"),
            ({"type": "pv"}, "type"),
            ({"ts": None}, "ts"),
        ],
    )
    def test_append_frame_rejects_bad_frames_and_stores_nothing(
        self, store: Store, change: dict[str, Any], field: str
    ) -> None:
        rows = [frame_row("a", 1.7e9), frame_row("b", 1.7e9)]
        frame = event_frame(rows)
        if "drop" in change:
            frame = frame.drop(change["drop"])
        else:
            frame = event_frame([rows[0], rows[1] | change])
        with pytest.raises(ValidationError) as info:
            store.events.append_frame(frame)
        assert info.value.errors[0].field == field
        assert store.events.count() == 0

    # --- events: scans ------------------------------------------------------------------

    def test_scan_by_user_orders_by_time_then_seq(self, store: Store) -> None:
        store.events.append(
            [view("late", ts=30.0), view("early", ts=10.0), view("other", user="u2", ts=5.0)]
        )
        store.events.append([view("mid", ts=20.0), view("tie", ts=10.0)])

        def of_u1(**kw: Any) -> list[str | None]:
            return ids(store.events.scan(subject="u:u1", **kw))

        assert of_u1() == ["early", "tie", "mid", "late"]
        assert of_u1(newest_first=True) == ["late", "mid", "tie", "early"]
        assert of_u1(newest_first=True, limit=2) == ["late", "mid"]
        assert of_u1(limit=2) == ["early", "tie"]
        assert store.events.scan(subject="u:u1", limit=0) == []
        assert ids(store.events.scan()) == ["other", "early", "tie", "mid", "late"]
        assert store.events.scan(subject="u:nobody") == []

    def test_scan_by_session_matches_session_id_of_any_event(self, store: Store) -> None:
        store.events.append(
            [
                view("anon", user=None, session_id="s1", ts=3.0),
                view("known", session_id="s1", ts=2.0),
                view("elsewhere", session_id="s2", ts=1.0),
            ]
        )
        assert ids(store.events.scan(subject="s:s1")) == ["known", "anon"]
        assert ids(store.events.scan(subject="s:s2")) == ["elsewhere"]

    def test_scan_after_seq(self, store: Store) -> None:
        last = store.events.append([view("a", ts=5.0), view("b", ts=1.0)]).last_seq
        store.events.append([view("c", ts=3.0), view("d", ts=0.0)])
        assert ids(store.events.scan(after_seq=last)) == ["d", "c"]
        newest = store.events.scan(subject="u:u1", after_seq=last, newest_first=True)
        assert ids(newest) == ["c", "d"]
        assert [seq > last for seq, _ in store.events.scan(after_seq=last)] == [True, True]

    def test_scan_by_types_filters_before_the_limit(self, store: Store) -> None:
        shown = [
            Event(event_id=f"imp{n}", type="impression", user_id="u1", item_id="i2", timestamp=50.0)
            for n in range(5)
        ]
        store.events.append([view("a", ts=10.0), view("b", ts=20.0), *shown])
        store.events.append([Event(event_id="buy", type="purchase", user_id="u1", item_id="i1")])
        kept = store.events.scan(
            subject="u:u1", newest_first=True, limit=2, types={"view", "purchase"}
        )
        assert ids(kept) == ["buy", "b"]  # the impressions do not take the limit's places
        assert ids(store.events.scan(subject="u:u1", types=["view"])) == ["a", "b"]
        assert ids(store.events.scan(types=["impression"], limit=1)) == ["imp0"]
        assert store.events.scan(subject="u:u1", types=[]) == []
        restored = store.events.scan(subject="u:u1", types=["impression"], limit=1)[0][1]
        assert restored == shown[0] and restored.type.value == "impression"

    @pytest.mark.parametrize("subject", ["u1", "x:u1", "u:", ""])
    def test_scan_rejects_a_bad_subject(self, store: Store, subject: str) -> None:
        with pytest.raises(ValidationError):
            store.events.scan(subject=subject)

    def test_scan_rejects_a_negative_limit(self, store: Store) -> None:
        with pytest.raises(ValidationError):
            store.events.scan(limit=-1)

    def test_event_round_trip_is_exact(self, store: Store) -> None:
        full = Event(
            event_id="full",
            type="purchase",
            user_id="u1",
            session_id="s1",
            item_id="i9",
            timestamp="2024-03-01T12:34:56.789123+02:00",
            value=4.5,
            quantity=3,
            price=19.99,
            query="red shoes",
            recommendation_id="r-1",
            context={"page": "home", "position": 3, "ratio": 0.25, "ab": True, "none": None},
        )
        search = Event(type="search", session_id="s9", query="héllo wörld", timestamp=1e9 + 1e-6)
        store.events.append([full, search])
        assert [e for _, e in store.events.scan()] == [search, full]
        assert store.events.scan(subject="u:u1")[0][1].context == full.context

    # --- events: frames -----------------------------------------------------------------

    def test_frame_round_trip_values_nulls_and_dtypes(self, store: Store) -> None:
        store.events.append(
            [
                Event(
                    event_id="e1",
                    type="purchase",
                    user_id="u1",
                    session_id="s1",
                    item_id="i1",
                    timestamp=1_700_000_000.123456,
                    value=5.0,
                    quantity=2,
                    price=9.99,
                    recommendation_id="r1",
                    context={"page": "cart", "position": 2},
                ),
                Event(event_id="e2", type="search", session_id="s2", query="shoes", timestamp=7),
            ]
        )
        frame = store.events.frame()
        assert frame.schema == pl.Schema(FRAME_DTYPES)
        rows = frame.drop("seq", "context").to_dicts()
        assert rows == [
            {"event_id": "e1", "type": "purchase", "user_id": "u1", "session_id": "s1",
             "item_id": "i1", "ts": 1_700_000_000.123456, "value": 5.0, "quantity": 2.0,
             "price": 9.99, "query": None, "recommendation_id": "r1"},
            {"event_id": "e2", "type": "search", "user_id": None, "session_id": "s2",
             "item_id": None, "ts": 7.0, "value": None, "quantity": None, "price": None,
             "query": "shoes", "recommendation_id": None},
        ]  # fmt: skip
        context = frame["context"].to_list()
        assert json.loads(context[0]) == {"page": "cart", "position": 2}
        assert context[1] is None
        assert frame["seq"].is_sorted() and frame["seq"].n_unique() == 2

    def test_frame_after_seq_and_empty_frames_are_typed(self, store: Store) -> None:
        empty = store.events.frame()
        assert empty.height == 0 and empty.schema == pl.Schema(FRAME_DTYPES)
        last = store.events.append([view("a"), view("b")]).last_seq
        store.events.append([view("c")])
        assert store.events.frame(after_seq=last)["event_id"].to_list() == ["c"]
        after_all = store.events.frame(after_seq=store.events.frame()["seq"].to_list()[-1])
        assert after_all.height == 0 and after_all.schema == pl.Schema(FRAME_DTYPES)

    def test_frame_feeds_append_frame(self, store: Store) -> None:
        store.events.append([view("a", context={"k": "v"}), view("b", session_id="s1")])
        copy = open_store("memory://")
        assert copy.events.append_frame(store.events.frame()).accepted == 2
        assert [e for _, e in copy.events.scan()] == [e for _, e in store.events.scan()]

    # --- events: deletion and threads ---------------------------------------------------

    def test_delete_user_removes_only_that_users_events(self, store: Store) -> None:
        store.events.append(
            [
                view("a", session_id="s1"),
                view("b"),
                view("c", user="u2", session_id="s1"),
                view("d", user=None, session_id="s1"),
            ]
        )
        assert store.events.delete_user("u1") == 2
        assert store.events.delete_user("u1") == 0
        assert store.events.count() == 2
        assert store.events.scan(subject="u:u1") == []
        assert ids(store.events.scan(subject="s:s1")) == ["c", "d"]
        assert store.events.frame()["event_id"].to_list() == ["c", "d"]
        assert store.events.append([view("b")]).accepted == 1  # its id is free again

    def test_delete_before_removes_only_older_events(self, store: Store) -> None:
        store.events.append(
            [
                view("old", ts=10.0, session_id="s1"),
                view("edge", ts=20.0),
                view("new", user="u2", ts=30.0, session_id="s1"),
                view("older", user="u2", ts=5.0),
            ]
        )
        assert store.events.delete_before(20.0) == 2
        assert store.events.delete_before(20.0) == 0
        assert ids(store.events.scan()) == ["edge", "new"]
        assert ids(store.events.scan(subject="s:s1")) == ["new"]
        assert ids(store.events.scan(subject="u:u2")) == ["new"]
        assert store.events.frame()["event_id"].to_list() == ["edge", "new"]
        assert store.events.append([view("old", ts=10.0)]).accepted == 1  # its id is free again

    def test_assign_session_attributes_anonymous_events_to_the_user(self, store: Store) -> None:
        store.events.append(
            [
                view("a", user=None, session_id="s1"),
                view("b", user="u2", session_id="s1"),  # already someone's: unchanged
                view("c", user=None, session_id="s2"),
            ]
        )
        assert store.events.assign_session("s1", "u9") == 1
        assert store.events.assign_session("s1", "u9") == 0
        assert ids(store.events.scan(subject="u:u9")) == ["a"]
        assert ids(store.events.scan(subject="u:u2")) == ["b"]
        assert ids(store.events.scan(subject="s:s1")) == ["a", "b"]
        frame = store.events.frame()
        assert frame.filter(frame["event_id"] == "a")["user_id"].to_list() == ["u9"]
        assert store.events.delete_user("u9") == 1

    def test_concurrent_appends_from_threads_lose_and_duplicate_nothing(self, store: Store) -> None:
        accepted: list[int] = []

        def worker(offset: int) -> None:
            for n in range(20):  # overlapping ids: threads race to store the same events
                batch = [view(f"e{offset + n}-{j}") for j in range(5)]
                accepted.append(store.events.append(batch).accepted)

        threads = [threading.Thread(target=worker, args=(k * 10,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(accepted) == store.events.count() == 50 * 5

    # --- repositories -------------------------------------------------------------------

    def test_items_upsert_get_replace_delete(self, store: Store) -> None:
        shoe = Item(
            item_id="i1",
            title="Red shoe",
            category="Shoes > Red",
            price=10,
            stock=3,
            attributes={"color": "red", "sizes": [40, 41]},
        )
        assert store.items.upsert([shoe, Item(item_id="i2")]) == 2
        assert store.items.get("i1") == shoe
        assert store.items.get("nope") is None
        assert store.items.upsert([shoe.model_copy(update={"price": 8.0})]) == 1
        got = store.items.get("i1")
        assert got is not None and got.price == 8.0 and store.items.count() == 2
        got.title = "changed by the caller"
        assert store.items.get("i1") == shoe.model_copy(update={"price": 8.0})
        assert store.items.delete("i1") is True
        assert store.items.delete("i1") is False
        assert store.items.get("i1") is None and store.items.count() == 1

    def test_get_many_returns_known_keys_across_chunks(self, store: Store) -> None:
        store.items.upsert([Item(item_id=f"i{n:04d}", price=n) for n in range(1200)])
        keys = [f"i{n:04d}" for n in range(1200)] + ["missing", "i0001"]
        found = store.items.get_many(keys)
        assert len(found) == 1200 and "missing" not in found
        assert found["i1199"].price == 1199
        assert store.items.get_many([]) == {}
        assert store.items.get_many(["missing"]) == {}

    def test_scan_yields_every_record_in_key_order(self, store: Store) -> None:
        keys = [f"i{n:05d}" for n in range(2500)]
        store.items.upsert([Item(item_id=k) for k in reversed(keys)])
        assert [i.item_id for i in store.items.scan()] == keys
        assert list(store.users.scan()) == []

    def test_users_repository(self, store: Store) -> None:
        ann = User(
            user_id="u1", age=31, timezone="Europe/London", consent={"email": True}, region="UK"
        )
        assert store.users.upsert([ann, User(user_id="u2")]) == 2
        assert store.users.get("u1") == ann
        assert store.users.get_many(["u2", "u3"]) == {"u2": User(user_id="u2")}
        assert [u.user_id for u in store.users.scan()] == ["u1", "u2"]
        assert store.users.delete("u2") is True and store.users.delete("u3") is False
        assert store.users.count() == 1 and store.items.count() == 0


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        store = open_store("memory://")
        assert isinstance(store, MemoryStore)
        yield store
        store.close()


class TestPostgresStore(StoreContract):
    """The contract against a real PostgreSQL server, in a schema of this test's own."""

    @pytest.fixture
    def store(self, postgres_url: str) -> Iterator[Store]:
        from shopcast.storage._postgres import PostgresStore

        store = open_store(postgres_url)
        assert isinstance(store, PostgresStore)
        yield store
        store.close()


def _pragma(db: Path, name: str) -> Any:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def db(self, tmp_path: Path) -> Path:
        return tmp_path / "shop.db"

    @pytest.fixture
    def store(self, db: Path) -> Iterator[Store]:
        store = open_store(f"sqlite:///{db}")
        assert isinstance(store, SqliteStore)
        yield store
        store.close()

    def test_data_persists_after_close_and_reopen(self, store: Store, db: Path) -> None:
        store.events.append([view("a", context={"k": 1})])
        store.events.append_frame(event_frame([frame_row("b", 1.8e9)]))
        store.items.upsert([Item(item_id="i1", title="Shoe")])
        store.users.upsert([User(user_id="u1", age=40)])
        store.close()
        again = open_store(f"sqlite:///{db}")
        try:
            assert ids(again.events.scan()) == ["a", "b"]
            assert again.events.scan()[0][1] == view("a", context={"k": 1})
            assert again.items.get("i1") == Item(item_id="i1", title="Shoe")
            assert again.users.get("u1") == User(user_id="u1", age=40)
            assert again.events.append([view("a")]).duplicates == 1
        finally:
            again.close()

    def test_wal_full_sync_and_schema_version(self, store: SqliteStore, db: Path) -> None:
        assert _pragma(db, "journal_mode") == "wal"
        assert _pragma(db, "user_version") == SCHEMA_VERSION
        assert store._db._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL

    def test_acknowledged_appends_survive_sigkill(self, db: Path) -> None:
        code = textwrap.dedent(
            f"""
            import os, signal
            import polars as pl
            from shopcast.domain import Event
            from shopcast.storage import open_store
            store = open_store("sqlite:///{db}")
            for n in range(20):
                batch = [
                    Event(event_id=f"k{{n}}-{{j}}", type="view", user_id="u1", item_id="i1")
                    for j in range(10)
                ]
                print(store.events.append(batch).accepted, flush=True)
            frame = pl.DataFrame(
                {{"event_id": ["f1", "f2"], "type": ["view"] * 2, "user_id": ["u2"] * 2,
                  "session_id": [None] * 2, "item_id": ["i2"] * 2, "ts": [1.7e9] * 2,
                  "value": [None] * 2, "quantity": [None] * 2, "price": [None] * 2,
                  "query": [None] * 2, "recommendation_id": [None] * 2, "context": [None] * 2}}
            )
            print(store.events.append_frame(frame).accepted, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == -9, proc.stderr
        assert proc.stdout.split() == ["10"] * 20 + ["2"]
        store = open_store(f"sqlite:///{db}")
        try:
            stored = set(store.events.frame()["event_id"].to_list())
        finally:
            store.close()
        acked = {f"k{n}-{j}" for n in range(20) for j in range(10)} | {"f1", "f2"}
        assert stored == acked

    @pytest.mark.parametrize("batch_rows", [40, 64])
    def test_append_frame_in_slices(
        self, store: Store, monkeypatch: pytest.MonkeyPatch, batch_rows: int
    ) -> None:
        monkeypatch.setattr(_sqlite, "_BATCH_ROWS", batch_rows)
        self.test_append_frame_of_many_rows_keeps_order_and_counts(store)

    def test_a_newer_schema_version_is_refused(self, db: Path) -> None:
        open_store(f"sqlite:///{db}").close()
        with sqlite3.connect(db) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        with pytest.raises(StorageError, match="schema version"):
            open_store(f"sqlite:///{db}")

    def test_a_closed_store_raises_storage_error(self, store: Store) -> None:
        store.close()
        with pytest.raises(StorageError):
            store.events.count()


def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url, path in [
        ("sqlite:///data/nested/rel.db", tmp_path / "data/nested/rel.db"),
        (f"sqlite:///{tmp_path}/abs/deep/abs.db", tmp_path / "abs/deep/abs.db"),
    ]:
        store = open_store(url)
        store.events.append([view("a")])
        store.close()
        assert path.is_file() and store.url == url
    first, second = open_store("sqlite://:memory:"), open_store("sqlite://:memory:")
    assert first.events.append([view("a")]).accepted == 1
    assert second.events.count() == 0  # each one is private
    first.close()
    second.close()
    assert sorted(os.listdir(tmp_path)) == ["abs", "data"]


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://host/x.db", "sqlite:///d/"])
def test_bad_sqlite_urls_raise_storage_error(url: str) -> None:
    with pytest.raises(StorageError, match="bad SQLite URL"):
        open_store(url)


@pytest.mark.parametrize("url", ["mongodb://localhost/db", "shop.db", "ftp://x/y.db"])
def test_unknown_scheme_raises_unknown_backend_error(url: str) -> None:
    with pytest.raises(UnknownBackendError):
        open_store(url)
