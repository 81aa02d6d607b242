"""Attribution and measurement: every decision, message, open, click and purchase.

- A **decision** is one trigger firing for one user: ``sent`` (messages in the outbox),
  ``holdout`` (eligible but held out: the control group), ``suppressed`` by a policy
  rule, or ``deferred`` (quiet hours; decided again when they end).
- A **conversion** is a purchase of an item of a ``sent`` or ``holdout`` decision
  within ``push.attribution_window`` after it; ``click_purchases`` are those after a
  click on the message (push → click → purchase).
- **Lift** per trigger: conversion rate of sent decisions minus that of holdout
  decisions, with a 95 % Wald interval of the difference of two proportions
  (``diff ± 1.96·√(p₁(1−p₁)/n₁ + p₀(1−p₀)/n₀)``), and the relative lift ``p₁/p₀ − 1``.
  Holdout decisions count against caps and the no-repeat rule like sent ones, so both
  groups pass the same policy and differ only by the message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shopcast.push._sqlite import open_push_database

SENT = "sent"
HOLDOUT = "holdout"
SUPPRESSED = "suppressed"
DEFERRED = "deferred"
Z95 = 1.959963984540054

_SCHEMA = (
    """CREATE TABLE push_decisions (
        decision_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        trigger TEXT NOT NULL,
        outcome TEXT NOT NULL,
        rule TEXT,
        items TEXT NOT NULL,
        channels TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX push_decisions_user ON push_decisions(user_id, created_at)",
    """CREATE TABLE push_sent (
        message_id TEXT PRIMARY KEY,
        decision_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        trigger TEXT NOT NULL,
        channel TEXT NOT NULL,
        created_at REAL NOT NULL,
        delivered_at REAL
    )""",
    "CREATE INDEX push_sent_user ON push_sent(user_id)",
    """CREATE TABLE push_feedback (
        message_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        ts REAL NOT NULL,
        user_id TEXT NOT NULL,
        PRIMARY KEY (message_id, kind)
    )""",
    """CREATE TABLE push_conversions (
        decision_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        ts REAL NOT NULL,
        clicked_message TEXT,
        PRIMARY KEY (decision_id, item_id)
    )""",
)


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    user_id: str
    trigger: str
    outcome: str
    items: tuple[str, ...]
    created_at: float
    rule: str | None = None
    channels: tuple[str, ...] = ()


def lift(sent: int, sent_conv: int, held: int, held_conv: int) -> dict[str, Any]:
    """Conversion rates, their difference with a 95 % Wald interval, relative lift."""
    p1 = sent_conv / sent if sent else None
    p0 = held_conv / held if held else None
    out: dict[str, Any] = {
        "sent": sent,
        "sent_conversions": sent_conv,
        "sent_rate": p1,
        "holdout": held,
        "holdout_conversions": held_conv,
        "holdout_rate": p0,
        "lift": None,
        "ci95": None,
        "relative_lift": None,
    }
    if p1 is None or p0 is None:
        return out
    diff = p1 - p0
    se = math.sqrt(p1 * (1 - p1) / sent + p0 * (1 - p0) / held)
    out["lift"] = diff
    out["ci95"] = [diff - Z95 * se, diff + Z95 * se]
    out["relative_lift"] = (p1 / p0 - 1) if p0 > 0 else None
    return out


class Attribution:
    """The journal of decisions, messages and feedback, and the metrics over it."""

    def __init__(self, url: str, db: Any = None) -> None:
        self._db = db if db is not None else open_push_database(url)
        self._db.migrate(list(_SCHEMA), "attribution")

    # -- writes -----------------------------------------------------------------------

    def record(self, decisions: Sequence[Decision]) -> int:
        """Journal decisions (a replayed decision id is ignored); returns new ones."""
        with self._db.write() as conn:
            n = 0
            for d in decisions:
                n += conn.execute(
                    "INSERT INTO push_decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (
                        d.decision_id,
                        d.user_id,
                        d.trigger,
                        d.outcome,
                        d.rule,
                        json.dumps(list(d.items)),
                        json.dumps(list(d.channels)),
                        d.created_at,
                    ),
                ).rowcount
            return n

    def sent(self, rows: Sequence[tuple[str, str, str, str, str, float]]) -> None:
        """``(message_id, decision_id, user_id, trigger, channel, created_at)``."""
        with self._db.write() as conn:
            conn.executemany(
                "INSERT INTO push_sent VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT DO NOTHING",
                list(rows),
            )

    def delivered(self, message_id: str, ts: float) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE push_sent SET delivered_at = ? WHERE message_id = ? "
                "AND delivered_at IS NULL",
                (ts, message_id),
            )

    def feedback(self, message_id: str, kind: str, ts: float) -> bool | None:
        """Record the first open/click of a message (a click implies an open).
        None for an unknown message; False when already recorded."""
        with self._db.write() as conn:
            row = conn.execute(
                "SELECT user_id FROM push_sent WHERE message_id = ?", (message_id,)
            ).fetchone()
            if row is None:
                return None
            kinds = ["open", "click"] if kind == "click" else [kind]
            new = False
            for k in kinds:
                cur = conn.execute(
                    "INSERT INTO push_feedback VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (message_id, k, ts, row[0]),
                )
                new = new or (k == kind and cur.rowcount > 0)
            return new

    def purchase(self, user_id: str, item_id: str, ts: float, window: float) -> int:
        """A purchase: convert the user's sent/holdout decisions of the item in the window."""
        with self._db.write() as conn:
            rows = conn.execute(
                "SELECT decision_id, items FROM push_decisions WHERE user_id = ? "
                "AND outcome IN ('sent', 'holdout') AND created_at >= ? AND created_at <= ?",
                (user_id, ts - window, ts),
            ).fetchall()
            n = 0
            for decision_id, items in rows:
                if item_id not in json.loads(items):
                    continue
                click = conn.execute(
                    "SELECT f.message_id FROM push_feedback f JOIN push_sent s "
                    "ON s.message_id = f.message_id WHERE s.decision_id = ? AND f.kind = 'click' "
                    "AND f.ts <= ? ORDER BY f.ts LIMIT 1",
                    (decision_id, ts),
                ).fetchone()
                n += conn.execute(
                    "INSERT INTO push_conversions VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (decision_id, item_id, user_id, ts, None if click is None else click[0]),
                ).rowcount
            return n

    # -- reads ------------------------------------------------------------------------

    def known(self, decision_ids: Sequence[str]) -> set[str]:
        """Which of these decisions are already journaled."""
        out: set[str] = set()
        with self._db.read() as conn:
            for start in range(0, len(decision_ids), 500):
                part = list(decision_ids[start : start + 500])
                out.update(
                    r[0]
                    for r in conn.execute(
                        "SELECT decision_id FROM push_decisions WHERE decision_id IN "
                        f"({','.join('?' * len(part))})",
                        part,
                    )
                )
        return out

    def lock_users(self, user_ids: Sequence[str]) -> None:
        """Serialize decisions for these users until the decision round commits (on
        PostgreSQL an advisory lock per user; SQLite's write lock does it already)."""
        self._db.lock_users(user_ids)

    def recent(self, user_id: str, since: float) -> list[Decision]:
        """The user's sent and holdout decisions since ``since`` (policy: caps, repeats)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT decision_id, user_id, trigger, outcome, items, created_at, rule, "
                "channels FROM push_decisions WHERE user_id = ? AND created_at >= ? "
                "AND outcome IN ('sent', 'holdout') ORDER BY created_at",
                (user_id, since),
            ).fetchall()
        return [
            Decision(
                r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6], tuple(json.loads(r[7]))
            )
            for r in rows
        ]

    def decisions(self, user_id: str, limit: int = 100) -> list[Decision]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT decision_id, user_id, trigger, outcome, items, created_at, rule, "
                "channels FROM push_decisions WHERE user_id = ? "
                "ORDER BY created_at DESC LIMIT ?",
                (user_id, limit),
            ).fetchall()
        return [
            Decision(
                r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6], tuple(json.loads(r[7]))
            )
            for r in rows
        ]

    def feedback_of(self, message_id: str) -> dict[str, float]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT kind, ts FROM push_feedback WHERE message_id = ?", (message_id,)
            ).fetchall()
        return {k: float(t) for k, t in rows}

    def metrics(self, since: float | None = None) -> dict[str, Any]:
        """Per trigger: outcomes, suppressions per rule, lift vs holdout; per trigger and
        channel: messages, delivered, opened, clicked, purchases, click purchases."""
        t0 = -1.0 if since is None else since
        with self._db.read() as conn:
            outcomes = conn.execute(
                "SELECT trigger, outcome, COALESCE(rule, ''), COUNT(*) FROM push_decisions "
                "WHERE created_at >= ? GROUP BY 1, 2, 3",
                (t0,),
            ).fetchall()
            converted = conn.execute(
                "SELECT d.trigger, d.outcome, COUNT(DISTINCT d.decision_id) FROM push_decisions d "
                "JOIN push_conversions c ON c.decision_id = d.decision_id "
                "WHERE d.created_at >= ? GROUP BY 1, 2",
                (t0,),
            ).fetchall()
            channels = conn.execute(
                "SELECT s.trigger, s.channel, COUNT(*), COUNT(s.delivered_at), "
                "COUNT(o.message_id), COUNT(k.message_id) FROM push_sent s "
                "LEFT JOIN push_feedback o ON o.message_id = s.message_id AND o.kind = 'open' "
                "LEFT JOIN push_feedback k ON k.message_id = s.message_id AND k.kind = 'click' "
                "WHERE s.created_at >= ? GROUP BY 1, 2",
                (t0,),
            ).fetchall()
            purchases = conn.execute(
                "SELECT s.trigger, s.channel, COUNT(DISTINCT s.message_id) FROM push_sent s "
                "JOIN push_conversions c ON c.decision_id = s.decision_id "
                "WHERE s.created_at >= ? GROUP BY 1, 2",
                (t0,),
            ).fetchall()
            clicked = conn.execute(
                "SELECT s.trigger, s.channel, COUNT(DISTINCT s.message_id) FROM push_sent s "
                "JOIN push_conversions c ON c.clicked_message = s.message_id "
                "WHERE s.created_at >= ? GROUP BY 1, 2",
                (t0,),
            ).fetchall()
        triggers: dict[str, dict[str, Any]] = {}

        def entry(name: str) -> dict[str, Any]:
            return triggers.setdefault(
                name,
                {"decisions": 0, SENT: 0, HOLDOUT: 0, DEFERRED: 0, SUPPRESSED: {}, "channels": {}},
            )

        for trig, outcome, rule, n in outcomes:
            e = entry(trig)
            e["decisions"] += n
            if outcome == SUPPRESSED:
                e[SUPPRESSED][rule] = e[SUPPRESSED].get(rule, 0) + n
            else:
                e[outcome] = e.get(outcome, 0) + n
        conv = {(t, o): n for t, o, n in converted}
        for trig, e in triggers.items():
            e["lift"] = lift(
                e[SENT], conv.get((trig, SENT), 0), e[HOLDOUT], conv.get((trig, HOLDOUT), 0)
            )
        bought = {(t, c): n for t, c, n in purchases}
        click_bought = {(t, c): n for t, c, n in clicked}
        for trig, chan, n, delivered, opened, clicks in channels:
            entry(trig)["channels"][chan] = {
                "messages": n,
                "delivered": delivered,
                "opened": opened,
                "clicked": clicks,
                "purchases": bought.get((trig, chan), 0),
                "click_purchases": click_bought.get((trig, chan), 0),
                "open_rate": opened / n if n else None,
                "click_rate": clicks / n if n else None,
            }
        total_suppressed: dict[str, int] = {}
        for e in triggers.values():
            for rule, n in e[SUPPRESSED].items():
                total_suppressed[rule] = total_suppressed.get(rule, 0) + n
        return {
            "since": since,
            "triggers": dict(sorted(triggers.items())),
            "suppressed": dict(sorted(total_suppressed.items())),
            "totals": {
                "decisions": sum(e["decisions"] for e in triggers.values()),
                SENT: sum(e[SENT] for e in triggers.values()),
                HOLDOUT: sum(e[HOLDOUT] for e in triggers.values()),
                DEFERRED: sum(e[DEFERRED] for e in triggers.values()),
                "conversions": sum(n for (_, o), n in conv.items() if o == SENT),
            },
        }

    def prune(self, before: float) -> int:
        """Retention: decisions, messages, feedback and conversions older than ``before``."""
        with self._db.write() as conn:
            n = conn.execute("DELETE FROM push_decisions WHERE created_at < ?", (before,)).rowcount
            n += conn.execute("DELETE FROM push_sent WHERE created_at < ?", (before,)).rowcount
            n += conn.execute("DELETE FROM push_feedback WHERE ts < ?", (before,)).rowcount
            n += conn.execute("DELETE FROM push_conversions WHERE ts < ?", (before,)).rowcount
        return int(n)

    # -- erasure ------------------------------------------------------------------------

    def delete_user(self, user_id: str) -> int:
        with self._db.write() as conn:
            n = 0
            for table in ("push_decisions", "push_sent", "push_feedback", "push_conversions"):
                n += conn.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,)).rowcount
        return int(n)

    def close(self) -> None:
        self._db.close()
