"""The push engine's SQLite connection (WAL, ``synchronous=FULL``), shared by the
outbox, the trigger state and the attribution journal. Tables are ``push_*`` with
their own schema versions in ``push_meta``, so they can live in the store's file
beside the event log.

``batch()`` makes every write of a block one transaction (one fsync): the push engine
wraps each ``observe`` / ``tick`` in it, so a batch of 1,000 events costs one commit,
and the decisions, their outbox rows and the trigger state commit together.

``open_push_database(url)``: this class for ``sqlite://``, ``_pg.PgPushDatabase`` (the
same interface) for ``postgresql://``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from shopcast.errors import StorageError
from shopcast.storage._sqlite import BUSY_TIMEOUT_S, sqlite_path

R = TypeVar("R")


class PushDatabase:
    """One connection guarded by a re-entrant lock; ``write`` is one ``BEGIN IMMEDIATE``
    transaction, or part of the enclosing ``batch``."""

    dialect = "sqlite"
    skip_locked = ""  # BEGIN IMMEDIATE already serializes leases across processes

    def __init__(
        self, url: str, *, schema: Iterable[str] = (), name: str | None = None, version: int = 1
    ) -> None:
        self.path = sqlite_path(url)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0  # open batch / write blocks of the lock's owner
        self._closed = False
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        if name is not None:
            try:
                self.migrate(list(schema), name, version)
            except BaseException:
                self._conn.close()
                raise

    def migrate(self, schema: list[str], name: str, version: int = 1) -> None:
        """Create the tables of ``name`` once; refuse a newer schema."""
        with self.write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS push_meta (name TEXT PRIMARY KEY, version INTEGER)"
            )
            row = conn.execute("SELECT version FROM push_meta WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] > version:
                raise StorageError(
                    f"SQLite database {self.path!r}: push {name} schema version {row[0]}; "
                    f"this shopcast knows versions up to {version}"
                )
            if row is None:
                for statement in schema:
                    conn.execute(statement)
                conn.execute("INSERT INTO push_meta VALUES (?, ?)", (name, version))

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            yield self._conn

    def query(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """``fn(conn)`` under the read lock (the outbox's reads)."""
        with self.read() as conn:
            return fn(conn)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A transaction committed when the block ends (or by the enclosing batch)."""
        with self._lock, self._errors():
            if self._depth:
                yield self._conn
                return
            self._depth = 1
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every write inside is one transaction (nested batches join the outer one)."""
        with self.write():
            yield

    def lock_users(self, user_ids: Sequence[str]) -> None:
        """Decisions per user are serialized by the database-wide write lock already."""

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite database {self.path!r}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


def open_push_database(url: str) -> Any:
    """The push database named by the URL: ``PushDatabase`` or ``PgPushDatabase``."""
    if url.startswith(("postgresql://", "postgres://")):
        from shopcast.push._pg import PgPushDatabase

        return PgPushDatabase(url)
    return PushDatabase(url)
