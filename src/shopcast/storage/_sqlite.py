"""The default backend: one SQLite file (WAL, ``synchronous=FULL``).

Every acknowledged write is committed and fsynced, so it survives SIGKILL and power
loss. One connection guarded by a lock serves all threads of the process; other
processes may open the same file (writers wait up to ``BUSY_TIMEOUT_S``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any, Generic

import polars as pl

from shopcast.domain import Event, Item, User
from shopcast.errors import StorageError
from shopcast.storage._protocols import EVENT_COLUMNS, AppendResult, Catalog, EventLog, Profiles, T
from shopcast.storage._rows import (
    FRAME_SCHEMA,
    check_limit,
    clean_frame,
    event_row,
    row_event,
    rows_frame,
    subject_filter,
)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0
_PAGE_SIZE = 16384  # takes effect only when the file is created
_CACHE_KIB = 65536
_ROWS_PER_INSERT = 32  # rows per multi-row INSERT on the bulk path
_BATCH_ROWS = 65536  # rows held as Python objects at a time, in and out
_KEYS_PER_QUERY = 500  # keys per IN (...) in get_many
_DOCS_PER_PAGE = 1000  # records per query while a repository is scanned

_EVENT_INDEXES = {
    "events_event_id": "CREATE UNIQUE INDEX events_event_id ON events(event_id)",
    "events_user_ts": "CREATE INDEX events_user_ts ON events(user_id, ts) "
    "WHERE user_id IS NOT NULL",
    "events_session_ts": "CREATE INDEX events_session_ts ON events(session_id, ts) "
    "WHERE session_id IS NOT NULL",
}
_SCHEMA = (
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        type TEXT NOT NULL,
        user_id TEXT,
        session_id TEXT,
        item_id TEXT,
        ts REAL NOT NULL,
        value REAL,
        quantity REAL,
        price REAL,
        query TEXT,
        recommendation_id TEXT,
        context TEXT
    )""",
    *_EVENT_INDEXES.values(),
    "CREATE TABLE items (item_id TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    "CREATE TABLE users (user_id TEXT PRIMARY KEY, doc TEXT NOT NULL)",
)
_COLUMNS = ", ".join(EVENT_COLUMNS)
_ONE_ROW = "(" + ", ".join("?" * len(EVENT_COLUMNS)) + ")"
_INSERT = f"INSERT OR IGNORE INTO events ({_COLUMNS}) VALUES "


def sqlite_path(url: str) -> str:
    """The file path (or ``:memory:``) named by a ``sqlite://`` URL."""
    rest = url.partition("://")[2]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    path = rest[1:] if rest.startswith("/") else ""
    if not path or path.endswith("/"):
        raise StorageError(
            f"bad SQLite URL {url!r}; use sqlite:///relative.db, sqlite:////abs.db "
            "or sqlite://:memory:"
        )
    return path


class _Database:
    """The connection, its lock, and transactions that turn sqlite errors into StorageError."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite database {path!r}: {exc}") from exc
        try:
            self._configure()
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _configure(self) -> None:
        with self._errors():
            self._conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        if self.path != ":memory:" and mode != "wal":
            raise StorageError(f"SQLite database {self.path!r} cannot use WAL (mode {mode})")

    def _migrate(self) -> None:
        """Create the schema in a new database; refuse one written by a newer version."""
        with self.write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"SQLite database {self.path!r} has schema version {version}; "
                    f"this shopcast knows versions up to {SCHEMA_VERSION}"
                )
            if version == 0:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            yield self._conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction, committed when the block ends normally."""
        with self._lock, self._errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite database {self.path!r}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class SqliteEventLog:
    """The event log in table ``events``; ``seq`` is an AUTOINCREMENT rowid (gaps, no reuse)."""

    def __init__(self, db: _Database) -> None:
        self._db = db

    def append(self, events: Sequence[Event]) -> AppendResult:
        """Insert new events in one transaction; ``last_seq`` is the log's highest seq."""
        rows = [event_row(e) for e in events]
        stored: list[int] = []
        with self._db.write() as conn:
            cursor = conn.cursor()
            for position, row in enumerate(rows):
                cursor.execute(_INSERT + _ONE_ROW, row)
                if cursor.rowcount:
                    stored.append(position)
            last_seq = _last_seq(conn)
        return AppendResult(len(stored), len(rows) - len(stored), stored, last_seq)

    def append_batches(self, batches: Sequence[Sequence[Event]]) -> list[AppendResult]:
        """Several appends in ONE transaction (one commit, one fsync): a group commit.

        Each result is what ``append`` would have returned had the batches been appended
        one after the other (an event id stored by an earlier batch of the group is a
        duplicate in a later one); ``last_seq`` is the log's highest seq after the group.
        """
        rows = [[event_row(e) for e in batch] for batch in batches]
        stored: list[list[int]] = []
        with self._db.write() as conn:
            cursor = conn.cursor()
            for batch in rows:
                new: list[int] = []
                for position, row in enumerate(batch):
                    cursor.execute(_INSERT + _ONE_ROW, row)
                    if cursor.rowcount:
                        new.append(position)
                stored.append(new)
            last_seq = _last_seq(conn)
        return [
            AppendResult(len(new), len(batch) - len(new), new, last_seq)
            for batch, new in zip(rows, stored, strict=True)
        ]

    def append_frame(self, frame: pl.DataFrame) -> AppendResult:
        """Insert new rows of a clean frame in one transaction; ``stored`` is left empty.

        Into an empty log the rows are loaded first and the indexes built afterwards,
        which is much faster than updating them row by row.
        """
        clean = clean_frame(frame)
        with self._db.write() as conn:
            if conn.execute("SELECT EXISTS (SELECT 1 FROM events)").fetchone()[0]:
                accepted = _insert_frame(conn, clean)
            else:
                unique = clean.unique("event_id", keep="first", maintain_order=True)
                for name in _EVENT_INDEXES:
                    conn.execute(f"DROP INDEX {name}")
                accepted = _insert_frame(conn, unique)
                for statement in _EVENT_INDEXES.values():
                    conn.execute(statement)
            last_seq = _last_seq(conn)
        return AppendResult(accepted, clean.height - accepted, [], last_seq)

    def scan(
        self,
        *,
        subject: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
        types: Collection[str] | None = None,
    ) -> list[tuple[int, Event]]:
        """``(seq, event)`` pairs after ``after_seq`` ordered by ``(ts, seq)``."""
        check_limit(limit)
        where = "seq > ?"
        params: list[object] = [after_seq]
        if subject is not None:
            column, key = subject_filter(subject)
            where += f" AND {column} = ?"
            params.append(key)
        if types is not None:
            kinds = sorted({str(t) for t in types})
            where += f" AND type IN ({', '.join('?' * len(kinds))})" if kinds else " AND 0"
            params.extend(kinds)
        order = "ts DESC, seq DESC" if newest_first else "ts, seq"
        sql = f"SELECT seq, {_COLUMNS} FROM events WHERE {where} ORDER BY {order} LIMIT ?"
        with self._db.read() as conn:
            rows = conn.execute(sql, [*params, -1 if limit is None else limit]).fetchall()
        return [(row[0], row_event(row[1:])) for row in rows]

    def frame(self, *, after_seq: int = 0) -> pl.DataFrame:
        """Events after ``after_seq`` as a ``seq`` + ``EVENT_COLUMNS`` frame, in seq order."""
        parts = []
        with self._db.read() as conn:
            cursor = conn.execute(
                f"SELECT seq, {_COLUMNS} FROM events WHERE seq > ? ORDER BY seq", [after_seq]
            )
            while rows := cursor.fetchmany(_BATCH_ROWS):
                parts.append(rows_frame(rows))
        return pl.concat(parts) if parts else pl.DataFrame(schema=FRAME_SCHEMA)

    def delete_user(self, user_id: str) -> int:
        with self._db.write() as conn:
            return conn.execute("DELETE FROM events WHERE user_id = ?", [user_id]).rowcount

    def delete_before(self, ts: float) -> int:
        with self._db.write() as conn:
            return conn.execute("DELETE FROM events WHERE ts < ?", [ts]).rowcount

    def assign_session(self, session_id: str, user_id: str) -> int:
        with self._db.write() as conn:
            sql = "UPDATE events SET user_id = ? WHERE session_id = ? AND user_id IS NULL"
            return conn.execute(sql, [user_id, session_id]).rowcount

    def count(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def _insert_frame(conn: sqlite3.Connection, frame: pl.DataFrame) -> int:
    """INSERT OR IGNORE the rows in order, several per statement; returns how many were new."""
    many = _INSERT + ", ".join([_ONE_ROW] * _ROWS_PER_INSERT)
    new = 0
    for part in frame.iter_slices(_BATCH_ROWS):
        rows = part.rows()
        whole = len(rows) - len(rows) % _ROWS_PER_INSERT
        if whole:
            chunks = (
                tuple(chain.from_iterable(rows[i : i + _ROWS_PER_INSERT]))
                for i in range(0, whole, _ROWS_PER_INSERT)
            )
            new += conn.executemany(many, chunks).rowcount
        if whole < len(rows):
            new += conn.executemany(_INSERT + _ONE_ROW, rows[whole:]).rowcount
    return new


def _last_seq(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])


class SqliteRepository(Generic[T]):
    """Records of one model kept as JSON documents in a ``(key, doc)`` table."""

    def __init__(self, db: _Database, table: str, key: str, model: type[T]) -> None:
        self._db = db
        self._table = table
        self._key = key
        self._model: type[T] = model

    def upsert(self, records: Sequence[T]) -> int:
        """Insert or replace every record; returns how many were written."""
        rows = [(getattr(r, self._key), r.model_dump_json()) for r in records]
        with self._db.write() as conn:
            conn.executemany(f"INSERT OR REPLACE INTO {self._table} VALUES (?, ?)", rows)
        return len(rows)

    def get(self, key: str) -> T | None:
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT doc FROM {self._table} WHERE {self._key} = ?", [key]
            ).fetchone()
        return None if row is None else self._model.model_validate_json(row[0])

    def get_many(self, keys: Sequence[str]) -> dict[str, T]:
        """The records found, by key; unknown keys are left out."""
        unique = list(dict.fromkeys(keys))
        found: list[Any] = []
        with self._db.read() as conn:
            for i in range(0, len(unique), _KEYS_PER_QUERY):
                chunk = unique[i : i + _KEYS_PER_QUERY]
                marks = ", ".join("?" * len(chunk))
                found += conn.execute(
                    f"SELECT {self._key}, doc FROM {self._table} WHERE {self._key} IN ({marks})",
                    chunk,
                ).fetchall()
        return {key: self._model.model_validate_json(doc) for key, doc in found}

    def scan(self) -> Iterator[T]:
        """Every record in key order, read a page at a time (no lock held between pages)."""
        after = ""  # ids are never empty
        while True:
            with self._db.read() as conn:
                rows = conn.execute(
                    f"SELECT {self._key}, doc FROM {self._table} "
                    f"WHERE {self._key} > ? ORDER BY {self._key} LIMIT ?",
                    [after, _DOCS_PER_PAGE],
                ).fetchall()
            yield from (self._model.model_validate_json(doc) for _, doc in rows)
            if len(rows) < _DOCS_PER_PAGE:
                return
            after = rows[-1][0]

    def delete(self, key: str) -> bool:
        with self._db.write() as conn:
            return (
                conn.execute(f"DELETE FROM {self._table} WHERE {self._key} = ?", [key]).rowcount > 0
            )

    def count(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM {self._table}").fetchone()[0])


class SqliteStore:
    """Events, items and users in one SQLite database named by a ``sqlite://`` URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._db = _Database(sqlite_path(url))
        self.events: EventLog = SqliteEventLog(self._db)
        self.items: Catalog = SqliteRepository(self._db, "items", "item_id", Item)
        self.users: Profiles = SqliteRepository(self._db, "users", "user_id", User)

    def close(self) -> None:
        self._db.close()
