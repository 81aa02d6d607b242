"""The push engine's PostgreSQL database: trigger state, journal and outbox in the
store's database (tables from its Alembic migrations, revisions 0002 and 0003), shared
by every API process and worker.

``PgPushDatabase`` offers what ``_sqlite.PushDatabase`` offers, so ``PushState`` and
``Attribution`` run the same (portable) SQL on both: ``read()`` / ``write()`` yield a
connection whose ``execute`` / ``executemany`` take ``?`` placeholders, and
``batch()`` makes every write of a block one transaction on one pooled connection
(per thread), which the outbox joins too (``transaction()``), so a decision round
(an ``observe``, a ``tick``) commits its decisions, outbox rows and trigger state at
once, as on SQLite.

Across processes: ``skip_locked`` is appended to the lease queries (timers) so two
schedulers never lease the same timer, and ``lock_users`` takes a transaction-scoped
advisory lock per user before the policy reads the user's recent pushes, so two
processes deciding for one shopper at once are serialized and caps hold (SQLite gets
the same from its database-wide write lock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from shopcast.storage._postgres import PgDatabase

R = TypeVar("R")


def _sql(statement: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (no literal ``?`` or ``%`` in
    the push SQL)."""
    return statement.replace("?", "%s")


class PgConnection:
    """A psycopg connection that takes the SQLite-style statements of the push tables."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, statement: str, args: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.raw.execute(_sql(statement), tuple(args))

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            with self.raw.cursor() as cur:
                cur.executemany(_sql(statement), rows)


class PgPushDatabase:
    """The pool of the store's database plus a per-thread batch connection."""

    dialect = "postgresql"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        self.url = url
        self._pg = PgDatabase(url)  # migrates the schema to HEAD on open
        self._local = threading.local()
        self._closed = False

    def migrate(self, schema: list[str], name: str, version: int = 1) -> None:
        """The tables come from the Alembic migrations (run when the pool opened)."""

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """The thread's batch connection, or a pooled one in its own transaction."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None:
            with PgDatabase.errors_of(self._pg.conninfo):
                yield conn
            return
        with self._pg.transaction() as fresh:
            self._local.conn = fresh
            try:
                yield fresh
            finally:
                self._local.conn = None

    def read(self, fn: Callable[[psycopg.Connection[Any]], R] | None = None) -> Any:
        """With ``fn`` (the outbox's reads, as ``PgDatabase.read``): ``fn(conn)``, in the
        batch when there is one. Without (``PushState``, ``Attribution``): a context
        manager yielding the ``?``-style connection, as ``_sqlite.PushDatabase.read``."""
        if fn is None:
            return self.write()
        if getattr(self._local, "conn", None) is not None:
            with self.transaction() as conn:
                return fn(conn)
        return self._pg.read(fn)

    def query(self, fn: Callable[[PgConnection], R]) -> R:
        """``fn(conn)`` with a ``?``-style connection, in the batch when there is one;
        outside one, retried once on a broken connection (the outbox's reads)."""
        if getattr(self._local, "conn", None) is not None:
            with self.write() as conn:
                return fn(conn)
        return self._pg.read(lambda raw: fn(PgConnection(raw)))

    @contextmanager
    def write(self) -> Iterator[PgConnection]:
        with self.transaction() as conn:
            yield PgConnection(conn)

    @contextmanager
    def batch(self) -> Iterator[None]:
        with self.transaction():
            yield

    def lock_users(self, user_ids: Sequence[str]) -> None:
        """Serialize decisions per user until the enclosing transaction ends."""
        with self.write() as conn:
            for user in sorted(set(user_ids)):
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('shopcast-push:' || "
                    "current_schema() || ':' || ?))",
                    (user,),
                )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pg.close()
