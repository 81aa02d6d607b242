"""The SQLite outbox (tables ``push_messages``, ``push_deliveries``); see ``outbox``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from shopcast.push._sqlite import PushDatabase
from shopcast.push.messages import Claim, Delivery, DeliveryStatus, PushItem, PushMessage

_SCHEMA = (
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


def _message(row: sqlite3.Row | tuple[Any, ...]) -> PushMessage:
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


def _delivery(row: tuple[Any, ...]) -> Delivery:
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


class SqliteOutbox:
    """``Outbox`` in SQLite: commits are fsynced (``synchronous=FULL``) before ``enqueue``
    returns; claims are one ``BEGIN IMMEDIATE`` transaction, so processes sharing the
    file never lease the same delivery twice."""

    def __init__(self, url: str, db: PushDatabase | None = None) -> None:
        self._db = db if db is not None else PushDatabase(url)
        self._db.migrate(list(_SCHEMA), "outbox")

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
        with self._db.write() as conn:
            new = 0
            for row in msg_rows:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO push_messages (message_id, decision_id, user_id, "
                    "trigger, channel, title, body, items, data, priority, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                new += cur.rowcount
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM push_deliveries").fetchone()[0]
            for offset, d in enumerate(deliveries, 1):
                conn.execute(
                    "INSERT OR IGNORE INTO push_deliveries (delivery_id, message_id, user_id, "
                    "channel, target, status, attempts, next_attempt_at, lease_until, "
                    "last_error, delivered_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
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
                        seq + offset,
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
                "ORDER BY next_attempt_at, seq LIMIT ?",
                (*args, limit),
            ).fetchall()
            if not rows:
                return []
            ids = [r[0] for r in rows]
            marks = ",".join("?" * len(ids))
            conn.execute(
                f"UPDATE push_deliveries SET lease_until = ?, attempts = attempts + 1 "
                f"WHERE delivery_id IN ({marks})",
                (until, *ids),
            )
            mids = sorted({r[1] for r in rows})
            msgs = {
                m.message_id: m
                for m in map(
                    _message,
                    conn.execute(
                        f"SELECT {_MESSAGE_COLUMNS} FROM push_messages "
                        f"WHERE message_id IN ({','.join('?' * len(mids))})",
                        mids,
                    ).fetchall(),
                )
            }
        out = []
        for row in rows:
            d = _delivery(row)
            d = replace(d, attempts=d.attempts + 1)
            if d.message_id in msgs:
                out.append(Claim(d, msgs[d.message_id], until))
        return out

    def ack(self, delivery_id: str, *, now: float) -> bool:
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE push_deliveries SET status = 'delivered', delivered_at = ?, "
                "lease_until = 0 WHERE delivery_id = ? AND status = 'pending'",
                (now, delivery_id),
            )
            return cur.rowcount > 0

    def fail(self, delivery_id: str, *, now: float, error: str, retry_at: float | None) -> None:
        with self._db.write() as conn:
            if retry_at is None:
                conn.execute(
                    "UPDATE push_deliveries SET status = 'dead', last_error = ?, lease_until = 0 "
                    "WHERE delivery_id = ? AND status = 'pending'",
                    (error, delivery_id),
                )
            else:
                conn.execute(
                    "UPDATE push_deliveries SET next_attempt_at = ?, last_error = ?, "
                    "lease_until = 0 WHERE delivery_id = ? AND status = 'pending'",
                    (retry_at, error, delivery_id),
                )

    def requeue(self, delivery_id: str, *, now: float) -> bool:
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE push_deliveries SET status = 'pending', next_attempt_at = ?, "
                "lease_until = 0, attempts = 0 WHERE delivery_id = ? AND status = 'dead'",
                (now, delivery_id),
            )
            return cur.rowcount > 0

    def deliveries(
        self,
        *,
        status: DeliveryStatus | None = None,
        message_id: str | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        where, args = ["1"], []
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        if message_id is not None:
            where.append("message_id = ?")
            args.append(message_id)
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM push_deliveries WHERE {' AND '.join(where)} "
                "ORDER BY seq DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [_delivery(r) for r in rows]

    def get(self, message_id: str) -> PushMessage | None:
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM push_messages WHERE message_id = ?",
                (message_id,),
            ).fetchone()
        return None if row is None else _message(row)

    def history(
        self, user_id: str, *, since: float | None = None, limit: int = 100
    ) -> list[PushMessage]:
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM push_messages WHERE user_id = ? "
                "AND created_at >= ? ORDER BY created_at DESC, message_id LIMIT ?",
                (user_id, -1.0 if since is None else since, limit),
            ).fetchall()
        return [_message(r) for r in rows]

    def delete_user(self, user_id: str) -> int:
        with self._db.write() as conn:
            a = conn.execute("DELETE FROM push_deliveries WHERE user_id = ?", (user_id,)).rowcount
            b = conn.execute("DELETE FROM push_messages WHERE user_id = ?", (user_id,)).rowcount
        return int(a + b)

    def prune(self, before: float) -> int:
        done = (
            "SELECT message_id FROM push_messages m WHERE created_at < ? AND NOT EXISTS "
            "(SELECT 1 FROM push_deliveries d WHERE d.message_id = m.message_id "
            "AND d.status = 'pending')"
        )
        with self._db.write() as conn:
            ids = [r[0] for r in conn.execute(done, (before,)).fetchall()]
            n = 0
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                n += conn.execute(
                    f"DELETE FROM push_deliveries WHERE message_id IN ({marks})", part
                ).rowcount
                n += conn.execute(
                    f"DELETE FROM push_messages WHERE message_id IN ({marks})", part
                ).rowcount
        return int(n)

    def close(self) -> None:
        self._db.close()
