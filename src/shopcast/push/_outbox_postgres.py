"""The PostgreSQL outbox (tables ``push_messages``, ``push_deliveries``); see ``outbox``.

The tables belong to the store's schema and are created by its Alembic migrations
(``shopcast.storage.pg_migrations``, revision 0002). ``claim`` selects due deliveries
``FOR UPDATE SKIP LOCKED`` and leases them in the same transaction, so deliverers in
any number of processes and hosts never lease the same delivery at once and do not
wait for each other. Errors are those of the PostgreSQL store: an unreachable server
is ``StorageUnavailableError``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from shopcast.push._outbox_sqlite import _DELIVERY_COLUMNS, _MESSAGE_COLUMNS, _delivery, _message
from shopcast.push._pg import PgPushDatabase
from shopcast.push.messages import Claim, Delivery, DeliveryStatus, PushMessage
from shopcast.storage._postgres import PgDatabase

_MESSAGE_INSERT = (
    "INSERT INTO push_messages (message_id, decision_id, user_id, trigger, channel, title, "
    "body, items, data, priority, created_at) VALUES "
)
_MESSAGE_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"


class PostgresOutbox:
    """``Outbox`` in PostgreSQL, sharing the store's database (and schema) by URL."""

    def __init__(self, url: str, db: PgPushDatabase | None = None) -> None:
        # with the push engine's database, enqueues join its decision round's transaction
        self._db: PgDatabase | PgPushDatabase = db if db is not None else PgDatabase(url)

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
        new = 0
        with self._db.transaction() as conn:
            if msg_rows:
                cur = conn.execute(
                    _MESSAGE_INSERT
                    + ", ".join([_MESSAGE_ROW] * len(msg_rows))
                    + " ON CONFLICT (message_id) DO NOTHING",
                    [v for row in msg_rows for v in row],
                )
                new = max(cur.rowcount, 0)
            for d in deliveries:  # one statement each: seq follows the given order
                conn.execute(
                    "INSERT INTO push_deliveries (delivery_id, message_id, user_id, channel, "
                    "target, status, attempts, next_attempt_at, lease_until, last_error, "
                    "delivered_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s) "
                    "ON CONFLICT (delivery_id) DO NOTHING",
                    (
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
                    ),
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
        where = ["status = 'pending'", "next_attempt_at <= %s", "lease_until <= %s"]
        args: list[Any] = [now, now]
        if channel is not None:
            where.append("channel = %s")
            args.append(channel)
        if user_id is not None:
            where.append("user_id = %s")
            args.append(user_id)
        until = now + lease_s
        with self._db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM push_deliveries WHERE {' AND '.join(where)} "
                "ORDER BY next_attempt_at, seq LIMIT %s FOR UPDATE SKIP LOCKED",
                (*args, limit),
            ).fetchall()
            if not rows:
                return []
            ids = [r[0] for r in rows]
            conn.execute(
                "UPDATE push_deliveries SET lease_until = %s, attempts = attempts + 1 "
                "WHERE delivery_id = ANY(%s)",
                (until, ids),
            )
            mids = sorted({r[1] for r in rows})
            found = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM push_messages WHERE message_id = ANY(%s)",
                (mids,),
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
        with self._db.transaction() as conn:
            return max(conn.execute(sql, args).rowcount, 0)

    def ack(self, delivery_id: str, *, now: float) -> bool:
        return (
            self._update(
                "UPDATE push_deliveries SET status = 'delivered', delivered_at = %s, "
                "lease_until = 0 WHERE delivery_id = %s AND status = 'pending'",
                (now, delivery_id),
            )
            > 0
        )

    def fail(self, delivery_id: str, *, now: float, error: str, retry_at: float | None) -> None:
        if retry_at is None:
            self._update(
                "UPDATE push_deliveries SET status = 'dead', last_error = %s, lease_until = 0 "
                "WHERE delivery_id = %s AND status = 'pending'",
                (error, delivery_id),
            )
        else:
            self._update(
                "UPDATE push_deliveries SET next_attempt_at = %s, last_error = %s, "
                "lease_until = 0 WHERE delivery_id = %s AND status = 'pending'",
                (retry_at, error, delivery_id),
            )

    def requeue(self, delivery_id: str, *, now: float) -> bool:
        return (
            self._update(
                "UPDATE push_deliveries SET status = 'pending', next_attempt_at = %s, "
                "lease_until = 0, attempts = 0 WHERE delivery_id = %s AND status = 'dead'",
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
        where, args = ["TRUE"], []
        if status is not None:
            where.append("status = %s")
            args.append(status.value)
        if message_id is not None:
            where.append("message_id = %s")
            args.append(message_id)
        sql = (
            f"SELECT {_DELIVERY_COLUMNS} FROM push_deliveries WHERE {' AND '.join(where)} "
            "ORDER BY seq DESC LIMIT %s"
        )
        rows = self._db.read(lambda conn: conn.execute(sql, (*args, limit)).fetchall())
        return [_delivery(r) for r in rows]

    def get(self, message_id: str) -> PushMessage | None:
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM push_messages WHERE message_id = %s"
        row = self._db.read(lambda conn: conn.execute(sql, (message_id,)).fetchone())
        return None if row is None else _message(row)

    def history(
        self, user_id: str, *, since: float | None = None, limit: int = 100
    ) -> list[PushMessage]:
        sql = (
            f"SELECT {_MESSAGE_COLUMNS} FROM push_messages WHERE user_id = %s "
            "AND created_at >= %s ORDER BY created_at DESC, message_id LIMIT %s"
        )
        args = (user_id, -1.0 if since is None else since, limit)
        rows = self._db.read(lambda conn: conn.execute(sql, args).fetchall())
        return [_message(r) for r in rows]

    def delete_user(self, user_id: str) -> int:
        with self._db.transaction() as conn:
            a = conn.execute("DELETE FROM push_deliveries WHERE user_id = %s", (user_id,)).rowcount
            b = conn.execute("DELETE FROM push_messages WHERE user_id = %s", (user_id,)).rowcount
        return int(a + b)

    def prune(self, before: float) -> int:
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT message_id FROM push_messages m WHERE created_at < %s AND NOT EXISTS "
                "(SELECT 1 FROM push_deliveries d WHERE d.message_id = m.message_id "
                "AND d.status = 'pending') FOR UPDATE",
                (before,),
            ).fetchall()
            ids = [r[0] for r in rows]
            if not ids:
                return 0
            a = conn.execute(
                "DELETE FROM push_deliveries WHERE message_id = ANY(%s)", (ids,)
            ).rowcount
            b = conn.execute(
                "DELETE FROM push_messages WHERE message_id = ANY(%s)", (ids,)
            ).rowcount
        return int(a + b)

    def close(self) -> None:
        self._db.close()
