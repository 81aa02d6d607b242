"""PostgreSQL-only checks (the shared contract runs in test_contract.py): migrations,
COPY round trips, persistence, errors. Each test gets its own schema (``postgres_url``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import polars as pl
import psycopg
import pytest

from shopcast.domain import Event, Item, User
from shopcast.errors import StorageError, StorageUnavailableError, ValidationError
from shopcast.storage import Store, open_store
from shopcast.storage import _postgres as pg
from shopcast.storage._pg_migrate import HEAD, REVISIONS, SCRIPT_LOCATION, revision, upgrade
from shopcast.storage._postgres import PostgresStore, split_url
from shopcast.storage._rows import FRAME_SCHEMA


def frame_of(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {c: t for c, t in FRAME_SCHEMA.items() if c != "seq"}
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)


def row(event_id: str, ts: float = 1.7e9, **kw: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": "view", "user_id": "u1", "item_id": "i1", "ts": ts, **kw}


@pytest.fixture
def store(postgres_url: str) -> Iterator[Store]:
    store = open_store(postgres_url)
    yield store
    store.close()


def _tables(url: str) -> set[str]:
    conninfo, _ = split_url(url)
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    return {r[0] for r in rows}


# --- migrations ---------------------------------------------------------------------------


def test_head_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    script = ScriptDirectory.from_config(config)
    assert script.get_heads() == [HEAD]
    assert [r.revision for r in reversed(list(script.walk_revisions()))] == list(REVISIONS)


def test_upgrade_from_empty_then_idempotent(postgres_url: str) -> None:
    conninfo, _ = split_url(postgres_url)
    assert _tables(postgres_url) == set()
    assert upgrade(conninfo) == (None, HEAD)
    expected = {"alembic_version", "events", "items", "users"}
    expected |= {"model_versions", "model_current", "model_history"}
    expected |= {"push_messages", "push_deliveries"}
    created = _tables(postgres_url)
    assert expected <= created  # (later revisions add more)
    assert upgrade(conninfo) == (HEAD, HEAD)  # nothing to do the second time
    store = open_store(postgres_url)  # opening an up-to-date schema changes nothing
    store.events.append([Event(event_id="a", type="view", user_id="u1", item_id="i1")])
    store.close()
    assert _tables(postgres_url) == created
    with psycopg.connect(conninfo) as conn:
        assert revision(conn) == HEAD


def test_open_upgrades_a_schema_of_an_older_revision(postgres_url: str) -> None:
    conninfo, _ = split_url(postgres_url)
    assert upgrade(conninfo, "0001") == (None, "0001")
    assert "push_messages" not in _tables(postgres_url)
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "INSERT INTO events (event_id, type, user_id, item_id, ts) "
            "VALUES ('old', 'view', 'u1', 'i1', 1.0)"
        )
    store = open_store(postgres_url)  # migrates 0001 -> HEAD, keeping the data
    try:
        assert [e.event_id for _, e in store.events.scan()] == ["old"]
        assert "push_messages" in _tables(postgres_url)
        with psycopg.connect(conninfo) as conn:
            assert revision(conn) == HEAD
    finally:
        store.close()


def test_open_migrates_an_empty_schema_once_under_concurrency(postgres_url: str) -> None:
    stores: list[Store] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(open_store(postgres_url))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(stores) == 4
    stores[0].events.append([Event(event_id="a", type="view", user_id="u1", item_id="i1")])
    assert all(s.events.count() == 1 for s in stores)
    for s in stores:
        s.close()


def test_a_newer_schema_revision_is_refused(postgres_url: str) -> None:
    open_store(postgres_url).close()
    conninfo, _ = split_url(postgres_url)
    with psycopg.connect(conninfo) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StorageError, match="revision '9999'"):
        open_store(postgres_url)


def test_db_upgrade_command(postgres_url: str) -> None:
    from typer.testing import CliRunner

    from shopcast.cli import app

    runner = CliRunner()
    first = runner.invoke(app, ["db", "upgrade", "--db", postgres_url])
    assert first.exit_code == 0, first.output
    assert f"none -> {HEAD}" in first.output
    again = runner.invoke(app, ["db", "upgrade", "--db", postgres_url])
    assert again.exit_code == 0 and f"{HEAD} (up to date)" in again.output
    sqlite = runner.invoke(app, ["db", "upgrade", "--db", "sqlite:///x.db"])
    assert sqlite.exit_code == 0 and "migrates itself" in sqlite.output
    down = runner.invoke(app, ["db", "upgrade", "--db", "postgresql://postgres@127.0.0.1:1/x"])
    assert down.exit_code == 2 and "unavailable" in down.output


def test_a_reader_catching_up_by_seq_misses_nothing_while_writers_append(store: Store) -> None:
    """Appends are serialized (table lock), so seq grows in commit order: a reader that asks
    for everything after the last seq it saw never skips an event committed later with a
    smaller seq."""
    done = threading.Event()
    seen: list[str] = []

    def write(w: int) -> None:
        for n in range(40):
            batch = [
                Event(event_id=f"w{w}-{n}-{j}", type="view", user_id=f"u{w}", item_id="i1")
                for j in range(3)
            ]
            store.events.append(batch)

    def read() -> None:
        last = 0
        while True:
            finished = done.is_set()
            for seq, event in store.events.scan(after_seq=last):
                seen.append(str(event.event_id))
                last = max(last, seq)
            if finished:
                return

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    reader.join()
    assert len(seen) == len(set(seen)) == 4 * 40 * 3


# --- COPY and frames ----------------------------------------------------------------------

AWKWARD = [
    row("a", ts=1_700_000_000.123456, query="", context=json.dumps({"q": 'he said "hi", ok\nbye'})),
    row("b", ts=1e9 + 1e-6, user_id=None, session_id="s,1", value=0.1 + 0.2, price=19.99),
    row("c", ts=7.0, query="héllo wörld ✓", recommendation_id='r"1', quantity=3.0),
]


@pytest.mark.parametrize("into", ["empty", "non-empty"])
def test_append_frame_round_trips_awkward_values_exactly(store: Store, into: str) -> None:
    if into == "non-empty":
        store.events.append(
            [Event(event_id="first", type="view", user_id="u9", item_id="i", timestamp=1)]
        )
    result = store.events.append_frame(frame_of(AWKWARD))
    assert (result.accepted, result.duplicates) == (3, 0)
    got = store.events.frame().filter(pl.col("event_id") != "first").drop("seq")
    assert got.to_dicts() == frame_of(AWKWARD).to_dicts()  # "" stays "", None stays None
    events = {e.event_id: e for _, e in store.events.scan()}
    assert events["a"].context == {"q": 'he said "hi", ok\nbye'}


def test_bulk_load_into_empty_log_rebuilds_its_indexes(store: PostgresStore) -> None:
    def index_names() -> set[str]:
        sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        with store.db.transaction() as conn:
            return {r[0] for r in conn.execute(sql).fetchall()}

    before = index_names()
    assert {"events_user_ts", "events_session_ts", "events_ts", "events_event_id"} <= before
    store.events.append_frame(frame_of([row(f"e{n}") for n in range(10)]))
    assert index_names() == before


def test_frame_is_read_in_chunks(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "_FRAME_CHUNK_BYTES", 100)
    monkeypatch.setattr(pg, "_BATCH_ROWS", 7)
    rows = [row(f"e{n:03d}", ts=float(n), context='{"a":"x\\ny"}') for n in range(50)]
    assert store.events.append_frame(frame_of(rows)).accepted == 50
    frame = store.events.frame()
    assert frame["event_id"].to_list() == [r["event_id"] for r in rows]
    assert frame["context"].to_list() == [r["context"] for r in rows]
    assert store.events.frame(after_seq=int(frame["seq"][9]))["event_id"].to_list()[0] == "e010"


def test_bulk_appends_look_known_ids_up_in_slices(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg, "_IDS_PER_LOOKUP", 7)
    monkeypatch.setattr(pg, "_BATCH_ROWS", 5)
    fresh = [f"e{n:03d}" for n in range(40)]
    first = store.events.append_frame(frame_of([row(i) for i in fresh + fresh[::2]]))
    assert (first.accepted, first.duplicates) == (40, 20)
    more = [f"f{n:03d}" for n in range(30)]
    mixed = fresh[5:25] + more + more[:3] + fresh[:2]
    second = store.events.append_frame(frame_of([row(i) for i in mixed]))
    assert (second.accepted, second.duplicates) == (30, 25)
    assert store.events.frame()["event_id"].to_list() == fresh + more
    assert second.last_seq == store.events.frame()["seq"].max()


def test_text_with_nul_is_a_validation_error(store: Store) -> None:
    bad = Event(event_id="a", type="search", session_id="s1", query="x\x00y")
    with pytest.raises(ValidationError):
        store.events.append([bad])
    assert store.events.count() == 0


def test_items_scan_in_byte_order(store: Store) -> None:
    keys = ["B", "a", "_x", "Z9", "é", "b"]
    store.items.upsert([Item(item_id=k) for k in keys])
    assert [i.item_id for i in store.items.scan()] == sorted(keys)  # not the locale's order


def test_upsert_of_a_key_twice_in_one_batch_keeps_the_last(store: Store) -> None:
    store.users.upsert([User(user_id="u1", age=20), User(user_id="u1", age=30)])
    assert store.users.get("u1") == User(user_id="u1", age=30) and store.users.count() == 1


# --- persistence and errors ---------------------------------------------------------------


def test_acknowledged_appends_survive_sigkill_of_the_client(postgres_url: str) -> None:
    code = textwrap.dedent(
        f"""
        import os, signal
        from shopcast.domain import Event
        from shopcast.storage import open_store
        store = open_store({postgres_url!r})
        for n in range(10):
            batch = [Event(event_id=f"k{{n}}-{{j}}", type="view", user_id="u1", item_id="i1")
                     for j in range(10)]
            print(store.events.append(batch).accepted, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert proc.stdout.split() == ["10"] * 10
    store = open_store(postgres_url)
    try:
        assert store.events.count() == 100
        again = Event(event_id="k0-0", type="view", user_id="u1", item_id="i1")
        assert store.events.append([again]).duplicates == 1
    finally:
        store.close()


def test_a_closed_store_raises_storage_error(store: Store) -> None:
    store.close()
    with pytest.raises(StorageError):
        store.events.count()


def test_an_unreachable_server_is_storage_unavailable() -> None:
    with pytest.raises(StorageUnavailableError) as info:
        open_store("postgresql://postgres:secret@127.0.0.1:1/test")
    assert info.value.http_status == 503 and info.value.retry_after > 0
    assert "secret" not in info.value.message and "***" in info.value.message


def test_url_pool_parameters() -> None:
    conninfo, pool = split_url("postgres://u@h:5/db?options=-csearch_path%3Ds&pool_max_size=3")
    assert conninfo == "postgresql://u@h:5/db?options=-csearch_path%3Ds"
    assert pool["pool_max_size"] == 3 and pool["pool_min_size"] == 1
    for bad in ("postgresql://h/db?pool_max_size=x", "postgresql://h/db?pool_min_size=0"):
        with pytest.raises(StorageError):
            split_url(bad)
