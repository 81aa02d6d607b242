"""What the triggers remember between events, in SQLite (tables ``push_*``):

- timers: one per (user, trigger, key), due at a time (cart abandonment at the cart's
  last change + delay, …). ``due`` leases the due ones; ``done`` deletes one only if it
  was not re-armed meanwhile. A process that dies while handling a timer loses the
  lease, not the timer, and decision ids are derived from the timer, so handling it
  twice is a no-op in the outbox;
- interest: who viewed, carted or favourited an item, and when (price drop, back in
  stock);
- the item snapshot (price, original price, stock) the catalog triggers compare with;
- purchases per user and item (re-buy cycles);
- runtime trigger settings (``PUT /v1/push/triggers/{name}``), surviving restarts.

The same file can be shared by several processes (WAL); on PostgreSQL the tables are
in the store's database (migration 0003) and shared by every process; the worker of a
scaled-out deployment uses the same class. The SQL is portable between the two
(``ON CONFLICT``, ``?`` placeholders translated by ``push._pg``);
``tests/push/state_contract.py`` runs on both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from shopcast.push._sqlite import open_push_database

_SCHEMA = (
    """CREATE TABLE push_timers (
        user_id TEXT NOT NULL,
        trigger TEXT NOT NULL,
        key TEXT NOT NULL,
        due_at REAL NOT NULL,
        payload TEXT NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, trigger, key)
    )""",
    "CREATE INDEX push_timers_due ON push_timers(due_at)",
    """CREATE TABLE push_interest (
        item_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (item_id, user_id, kind)
    )""",
    "CREATE INDEX push_interest_user ON push_interest(user_id)",
    """CREATE TABLE push_items (
        item_id TEXT PRIMARY KEY,
        price REAL,
        original_price REAL,
        stock INTEGER
    )""",
    """CREATE TABLE push_purchases (
        user_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (user_id, item_id, ts)
    )""",
    "CREATE TABLE push_trigger_config (name TEXT PRIMARY KEY, doc TEXT NOT NULL)",
)


@dataclass(frozen=True, slots=True)
class Timer:
    user_id: str
    trigger: str
    key: str
    due_at: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ItemSnapshot:
    price: float | None
    original_price: float | None
    stock: int | None


class PushState:
    """Trigger state in SQLite (``sqlite:///path`` or ``sqlite://:memory:``) or in
    PostgreSQL (``postgresql://…``: the store's database, ``push._pg``)."""

    def __init__(self, url: str, db: Any = None) -> None:
        self._db = db if db is not None else open_push_database(url)
        self._db.migrate(list(_SCHEMA), "state")

    def batch(self) -> AbstractContextManager[None]:
        """One transaction for every write of the block (see ``_sqlite.PushDatabase``)."""
        batch: AbstractContextManager[None] = self._db.batch()
        return batch

    def shares(self, other: object) -> bool:
        """Whether ``other`` (outbox, journal) writes through this state's connection."""
        return getattr(other, "_db", None) is self._db

    # -- timers -------------------------------------------------------------------

    def arm(self, timers: Sequence[Timer]) -> None:
        """Set (or re-set: new due time and payload) timers; releases their lease."""
        with self._db.write() as conn:
            conn.executemany(
                "INSERT INTO push_timers VALUES (?, ?, ?, ?, ?, 0) "
                "ON CONFLICT (user_id, trigger, key) DO UPDATE SET due_at = excluded.due_at, "
                "payload = excluded.payload, lease_until = 0",
                [
                    (t.user_id, t.trigger, t.key, t.due_at, json.dumps(t.payload, sort_keys=True))
                    for t in timers
                ],
            )

    def timer(self, user_id: str, trigger: str, key: str) -> Timer | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT user_id, trigger, key, due_at, payload FROM push_timers "
                "WHERE user_id = ? AND trigger = ? AND key = ?",
                (user_id, trigger, key),
            ).fetchone()
        return None if row is None else Timer(row[0], row[1], row[2], row[3], json.loads(row[4]))

    def timers(self, user_id: str) -> list[Timer]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT user_id, trigger, key, due_at, payload FROM push_timers "
                "WHERE user_id = ? ORDER BY due_at",
                (user_id,),
            ).fetchall()
        return [Timer(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def disarm(self, user_id: str, trigger: str, key: str | None = None) -> int:
        with self._db.write() as conn:
            if key is None:
                cur = conn.execute(
                    "DELETE FROM push_timers WHERE user_id = ? AND trigger = ?", (user_id, trigger)
                )
            else:
                cur = conn.execute(
                    "DELETE FROM push_timers WHERE user_id = ? AND trigger = ? AND key = ?",
                    (user_id, trigger, key),
                )
            return int(cur.rowcount)

    def due(self, now: float, *, limit: int = 500, lease_s: float = 60.0) -> list[Timer]:
        """Lease up to ``limit`` timers due at ``now`` (earliest first)."""
        with self._db.write() as conn:
            rows = conn.execute(
                "SELECT user_id, trigger, key, due_at, payload FROM push_timers "
                "WHERE due_at <= ? AND lease_until <= ? ORDER BY due_at LIMIT ?"
                + self._db.skip_locked,
                (now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE push_timers SET lease_until = ? WHERE user_id = ? AND trigger = ? "
                "AND key = ?",
                [(now + lease_s, r[0], r[1], r[2]) for r in rows],
            )
        return [Timer(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def done(self, timer: Timer) -> bool:
        """Delete a handled timer unless it was re-armed (another due time) meanwhile."""
        with self._db.write() as conn:
            cur = conn.execute(
                "DELETE FROM push_timers WHERE user_id = ? AND trigger = ? AND key = ? "
                "AND due_at = ?",
                (timer.user_id, timer.trigger, timer.key, timer.due_at),
            )
            return bool(cur.rowcount > 0)

    def next_due(self) -> float | None:
        with self._db.read() as conn:
            row = conn.execute("SELECT MIN(due_at) FROM push_timers").fetchone()
        return None if row[0] is None else float(row[0])

    # -- interest, items, purchases ---------------------------------------------------

    def add_interest(self, rows: Iterable[tuple[str, str, str, float]]) -> None:
        """``(item_id, user_id, kind, ts)``; the latest time per kind is kept."""
        with self._db.write() as conn:
            conn.executemany(
                "INSERT INTO push_interest VALUES (?, ?, ?, ?) ON CONFLICT "
                "(item_id, user_id, kind) DO UPDATE SET ts = CASE WHEN excluded.ts > "
                "push_interest.ts THEN excluded.ts ELSE push_interest.ts END",
                list(rows),
            )

    def interested(self, item_id: str, *, since: float) -> dict[str, set[str]]:
        """Users who showed interest in the item since ``since``: user -> kinds."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT user_id, kind FROM push_interest WHERE item_id = ? AND ts >= ?",
                (item_id, since),
            ).fetchall()
        out: dict[str, set[str]] = {}
        for user, kind in rows:
            out.setdefault(user, set()).add(kind)
        return out

    def snapshot(self, item_ids: Sequence[str]) -> dict[str, ItemSnapshot]:
        out: dict[str, ItemSnapshot] = {}
        with self._db.read() as conn:
            for start in range(0, len(item_ids), 500):
                part = list(item_ids[start : start + 500])
                marks = ",".join("?" * len(part))
                for row in conn.execute(
                    f"SELECT item_id, price, original_price, stock FROM push_items "
                    f"WHERE item_id IN ({marks})",
                    part,
                ):
                    out[row[0]] = ItemSnapshot(row[1], row[2], row[3])
        return out

    def put_snapshot(self, rows: Iterable[tuple[str, ItemSnapshot]]) -> None:
        with self._db.write() as conn:
            conn.executemany(
                "INSERT INTO push_items VALUES (?, ?, ?, ?) ON CONFLICT (item_id) DO UPDATE "
                "SET price = excluded.price, original_price = excluded.original_price, "
                "stock = excluded.stock",
                [(i, s.price, s.original_price, s.stock) for i, s in rows],
            )

    def add_purchases(self, rows: Iterable[tuple[str, str, float]]) -> None:
        with self._db.write() as conn:
            conn.executemany(
                "INSERT INTO push_purchases VALUES (?, ?, ?) ON CONFLICT DO NOTHING", list(rows)
            )

    def purchases(self, user_id: str, item_id: str) -> list[float]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT ts FROM push_purchases WHERE user_id = ? AND item_id = ? ORDER BY ts",
                (user_id, item_id),
            ).fetchall()
        return [float(r[0]) for r in rows]

    # -- runtime trigger settings -------------------------------------------------------

    def trigger_overrides(self) -> dict[str, dict[str, Any]]:
        with self._db.read() as conn:
            rows = conn.execute("SELECT name, doc FROM push_trigger_config").fetchall()
        return {name: json.loads(doc) for name, doc in rows}

    def put_trigger_override(self, name: str, doc: dict[str, Any]) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO push_trigger_config VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET doc = excluded.doc",
                (name, json.dumps(doc, sort_keys=True)),
            )

    def prune(self, before: float) -> int:
        """Retention: interest and purchases older than ``before`` (timers are kept)."""
        with self._db.write() as conn:
            n = conn.execute("DELETE FROM push_interest WHERE ts < ?", (before,)).rowcount
            n += conn.execute("DELETE FROM push_purchases WHERE ts < ?", (before,)).rowcount
        return int(n)

    # -- erasure --------------------------------------------------------------------------

    def delete_user(self, user_id: str) -> int:
        with self._db.write() as conn:
            n = 0
            for table in ("push_timers", "push_interest", "push_purchases"):
                n += conn.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,)).rowcount
        return int(n)

    def close(self) -> None:
        self._db.close()
