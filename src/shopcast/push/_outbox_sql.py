"""The SQL outbox (tables ``push_messages``, ``push_deliveries``) on SQLite or PostgreSQL;
see ``outbox``.

One implementation over the push database (``_sqlite.PushDatabase`` or
``_pg.PgPushDatabase``): both take ``?`` placeholders and portable SQL, and say what
differs in two attributes:

- ``skip_locked``: on PostgreSQL, ``claim`` selects due deliveries ``FOR UPDATE SKIP
  LOCKED`` and leases them in the same transaction, so deliverers in any number of
  processes and hosts never lease the same delivery at once and do not wait for each
  other. On SQLite, ``BEGIN IMMEDIATE`` serializes the whole claim across processes
  sharing the file.
- ``dialect``: PostgreSQL numbers deliveries with an identity column (its tables come
  from the store's Alembic migrations, revision 0002); SQLite's tables are created here
  and ``seq`` is given on insert.

Commits are durable before ``enqueue`` returns (SQLite ``synchronous=FULL``; PostgreSQL
commit). With the push engine's database, an enqueue joins its decision round's
transaction. Errors are the database's: ``StorageError``, or on PostgreSQL
``StorageUnavailableError`` for an unreachable server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from shopcast.push.messages import Claim, Delivery, DeliveryStatus, PushItem, PushMessage

R = TypeVar("R")

SCHEMA = (
    """CREATE TABLE push_messages (
        message_id TEXT PRIMARY KEY,
        decision_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        trigger TEXT NOT NULL,
        channel TEXT NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        items TEXT NOT NULL,
        data TEXT NOT NULL,
        priority INTEGER NOT NULL,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX push_messages_user ON push_messages(user_id, created_at)",
    """CREATE TABLE push_deliveries (
        delivery_id TEXT PRIMARY KEY,
        message_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        target TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        delivered_at REAL,
        seq INTEGER NOT NULL
    )""",
    "CREATE INDEX push_deliveries_due ON push_deliveries(status, next_attempt_at)",
    "CREATE INDEX push_deliveries_user ON push_deliveries(user_id)",
    "CREATE INDEX push_deliveries_message ON push_deliveries(message_id)",
)
_DELIVERY_COLUMNS = (
    "delivery_id, message_id, channel, target, status, attempts, next_attempt_at, "
    "last_error, delivered_at, user_id"
)
_MESSAGE_COLUMNS = (
    "message_id, decision_id, user_id, trigger, channel, title, body, items, created_at, "
    "priority, data"
)
_CHUNK = 500  # ids per IN (...) list


class PushDb(Protocol):
    """What the outbox needs of ``PushDatabase`` / ``PgPushDatabase``."""

    dialect: str
    skip_locked: str

    def migrate(self, schema: list[str], name: str, version: int = 1) -> None: ...
    def write(self) -> AbstractContextManager[Any]: ...
    def query(self, fn: Callable[[Any], R]) -> R: ...
    def close(self) -> None: ...


def _message(row: Sequence[Any]) -> PushMessage:
    return PushMessage(
        message_id=row[0],
        decision_id=row[1],
        user_id=row[2],
        trigger=row[3],
        channel=row[4],
        title=row[5],
        body=row[6],
        items=tuple(PushItem.from_json(x) for x in json.loads(row[7])),
        created_at=float(row[8]),
        priority=int(row[9]),
        data=json.loads(row[10]),
    )


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(
        delivery_id=row[0],
        message_id=row[1],
        channel=row[2],
        target=row[3],
        status=DeliveryStatus(row[4]),
        attempts=int(row[5]),
        next_attempt_at=float(row[6]),
        last_error=row[7],
        delivered_at=row[8],
        user_id=row[9],
    )


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _count(cursor: Any) -> int:
    return max(int(cursor.rowcount), 0)


class SqlOutbox:
    """``Outbox`` in the push database; open it with ``SqliteOutbox(url)`` or
    ``PostgresOutbox(url)`` (or ``outbox.open_outbox(url)``)."""

    def __init__(self, db: PushDb) -> None:
        self._db = db
        self._db.migrate(list(SCHEMA), "outbox")  # a no-op on PostgreSQL (Alembic's)
        self._numbered = db.dialect == "postgresql"  # seq from an identity column

    def enqueue(self, messages: Sequence[PushMessage], deliveries: Sequence[Delivery]) -> int:
        msg_rows = [
            (
                m.message_id,
                m.decision_id,
                m.user_id,
                m.trigger,
                m.channel,
                m.title,
                m.body,
                json.dumps([i.to_json() for i in m.items]),
                json.dumps(m.data, sort_keys=True),
                m.priority,
                m.created_at,
            )
            for m in messages
        ]
        columns = (
            "delivery_id, message_id, user_id, channel, target, status, attempts, "
            "next_attempt_at, lease_until, last_error, delivered_at"
        )
        values = "?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?"
        if not self._numbered:
            columns, values = columns + ", seq", values + ", ?"
        new = 0
        with self._db.write() as conn:
            for row in msg_rows:
                new += _count(
                    conn.execute(
                        "INSERT INTO push_messages (message_id, decision_id, user_id, "
                        "trigger, channel, title, body, items, data, priority, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (message_id) DO NOTHING",
                        row,
                    )
                )
            seq = 0
            if not self._numbered and deliveries:
                seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM push_deliveries").fetchone()[
                    0
                ]
            for offset, d in enumerate(deliveries, 1):  # one statement each: seq keeps order
                row_values: tuple[Any, ...] = (
                    d.delivery_id,
                    d.message_id,
                    d.user_id,
                    d.channel,
                    d.target,
                    d.status.value,
                    d.attempts,
                    d.next_attempt_at,
                    d.last_error,
                    d.delivered_at,
                )
                if not self._numbered:
                    row_values += (seq + offset,)
                conn.execute(
                    f"INSERT INTO push_deliveries ({columns}) VALUES ({values}) "
                    "ON CONFLICT (delivery_id) DO NOTHING",
                    row_values,
                )
        return new

    def claim(
        self,
        now: float,
        *,
        limit: int = 100,
        lease_s: float = 30.0,
        channel: str | None = None,
        user_id: str | None = None,
    ) -> list[Claim]:
        where = ["status = 'pending'", "next_attempt_at <= ?", "lease_until <= ?"]
        args: list[Any] = [now, now]
        if channel is not None:
            where.append("channel = ?")
            args.append(channel)
        if user_id is not None:
            where.append("user_id = ?")
            args.append(user_id)
        until = now + lease_s
        with self._db.write() as conn:
            rows = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM push_deliveries WHERE {' AND '.join(where)} "
                f"ORDER BY next_attempt_at, seq LIMIT ?{self._db.skip_locked}",
                (*args, limit),
            ).fetchall()
            if not rows:
                return []
            ids = [r[0] for r in rows]
            conn.execute(
                "UPDATE push_deliveries SET lease_until = ?, attempts = attempts + 1 "
                f"WHERE delivery_id IN ({_marks(ids)})",
                (until, *ids),
            )
            mids = sorted({r[1] for r in rows})
            found = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM push_messages "
                f"WHERE message_id IN ({_marks(mids)})",
                mids,
            ).fetchall()
        msgs = {m.message_id: m for m in map(_message, found)}
        out = []
        for row in rows:
            d = _delivery(row)
            d = replace(d, attempts=d.attempts + 1)
            if d.message_id in msgs:
                out.append(Claim(d, msgs[d.message_id], until))
        return out

    def _update(self, sql: str, args: Sequence[Any]) -> int:
        with self._db.write() as conn:
            return _count(conn.execute(sql, args))

    def ack(self, delivery_id: str, *, now: float) -> bool:
        return (
            self._update(
                "UPDATE push_deliveries SET status = 'delivered', delivered_at = ?, "
                "lease_until = 0 WHERE delivery_id = ? AND status = 'pending'",
                (now, delivery_id),
            )
            > 0
        )

    def fail(self, delivery_id: str, *, now: float, error: str, retry_at: float | None) -> None:
        if retry_at is None:
            self._update(
                "UPDATE push_deliveries SET status = 'dead', last_error = ?, lease_until = 0 "
                "WHERE delivery_id = ? AND status = 'pending'",
                (error, delivery_id),
            )
        else:
            self._update(
                "UPDATE push_deliveries SET next_attempt_at = ?, last_error = ?, "
                "lease_until = 0 WHERE delivery_id = ? AND status = 'pending'",
                (retry_at, error, delivery_id),
            )

    def requeue(self, delivery_id: str, *, now: float) -> bool:
        return (
            self._update(
                "UPDATE push_deliveries SET status = 'pending', next_attempt_at = ?, "
                "lease_until = 0, attempts = 0 WHERE delivery_id = ? AND status = 'dead'",
                (now, delivery_id),
            )
            > 0
        )

    def deliveries(
        self,
        *,
        status: DeliveryStatus | None = None,
        message_id: str | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        where, args = ["1 = 1"], []
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        if message_id is not None:
            where.append("message_id = ?")
            args.append(message_id)
        sql = (
            f"SELECT {_DELIVERY_COLUMNS} FROM push_deliveries WHERE {' AND '.join(where)} "
            "ORDER BY seq DESC LIMIT ?"
        )
        rows = self._db.query(lambda conn: conn.execute(sql, (*args, limit)).fetchall())
        return [_delivery(r) for r in rows]

    def get(self, message_id: str) -> PushMessage | None:
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM push_messages WHERE message_id = ?"
        row = self._db.query(lambda conn: conn.execute(sql, (message_id,)).fetchone())
        return None if row is None else _message(row)

    def history(
        self, user_id: str, *, since: float | None = None, limit: int = 100
    ) -> list[PushMessage]:
        sql = (
            f"SELECT {_MESSAGE_COLUMNS} FROM push_messages WHERE user_id = ? "
            "AND created_at >= ? ORDER BY created_at DESC, message_id LIMIT ?"
        )
        args = (user_id, -1.0 if since is None else since, limit)
        rows = self._db.query(lambda conn: conn.execute(sql, args).fetchall())
        return [_message(r) for r in rows]

    def delete_user(self, user_id: str) -> int:
        with self._db.write() as conn:
            a = _count(conn.execute("DELETE FROM push_deliveries WHERE user_id = ?", (user_id,)))
            b = _count(conn.execute("DELETE FROM push_messages WHERE user_id = ?", (user_id,)))
        return a + b

    def prune(self, before: float) -> int:
        """Drop messages older than ``before`` none of whose deliveries is pending."""
        done = (
            "SELECT message_id FROM push_messages m WHERE created_at < ? AND NOT EXISTS "
            "(SELECT 1 FROM push_deliveries d WHERE d.message_id = m.message_id "
            f"AND d.status = 'pending'){self._db.skip_locked}"
        )
        n = 0
        with self._db.write() as conn:
            ids = [r[0] for r in conn.execute(done, (before,)).fetchall()]
            for start in range(0, len(ids), _CHUNK):
                part = ids[start : start + _CHUNK]
                for table in ("push_deliveries", "push_messages"):
                    n += _count(
                        conn.execute(
                            f"DELETE FROM {table} WHERE message_id IN ({_marks(part)})", part
                        )
                    )
        return n

    def close(self) -> None:
        self._db.close()


class SqliteOutbox(SqlOutbox):
    """``SqlOutbox`` in a SQLite file (or the push engine's ``PushDatabase``)."""

    def __init__(self, url: str, db: PushDb | None = None) -> None:
        from shopcast.push._sqlite import PushDatabase

        super().__init__(db if db is not None else PushDatabase(url))


class PostgresOutbox(SqlOutbox):
    """``SqlOutbox`` in PostgreSQL, sharing the store's database (and schema) by URL (or
    the push engine's ``PgPushDatabase``)."""

    def __init__(self, url: str, db: PushDb | None = None) -> None:
        from shopcast.push._pg import PgPushDatabase

        super().__init__(db if db is not None else PgPushDatabase(url))
