"""The push trigger state and attribution journal (``shopcast.push.state``,
``shopcast.push.attribution`` over ``shopcast.push._pg``): the same tables as in
SQLite, shared by every process of the deployment.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TABLES = (
    "push_timers",
    "push_interest",
    "push_items",
    "push_purchases",
    "push_trigger_config",
    "push_decisions",
    "push_sent",
    "push_feedback",
    "push_conversions",
)

_UP = (
    """CREATE TABLE push_timers (
        user_id TEXT NOT NULL,
        trigger TEXT NOT NULL,
        key TEXT NOT NULL,
        due_at DOUBLE PRECISION NOT NULL,
        payload TEXT NOT NULL,
        lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, trigger, key)
    )""",
    "CREATE INDEX push_timers_due ON push_timers (due_at)",
    """CREATE TABLE push_interest (
        item_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (item_id, user_id, kind)
    )""",
    "CREATE INDEX push_interest_user ON push_interest (user_id)",
    """CREATE TABLE push_items (
        item_id TEXT PRIMARY KEY,
        price DOUBLE PRECISION,
        original_price DOUBLE PRECISION,
        stock BIGINT
    )""",
    """CREATE TABLE push_purchases (
        user_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (user_id, item_id, ts)
    )""",
    "CREATE TABLE push_trigger_config (name TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    """CREATE TABLE push_decisions (
        decision_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        trigger TEXT NOT NULL,
        outcome TEXT NOT NULL,
        rule TEXT,
        items TEXT NOT NULL,
        channels TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX push_decisions_user ON push_decisions (user_id, created_at)",
    "CREATE INDEX push_decisions_created ON push_decisions (created_at)",
    """CREATE TABLE push_sent (
        message_id TEXT PRIMARY KEY,
        decision_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        trigger TEXT NOT NULL,
        channel TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        delivered_at DOUBLE PRECISION
    )""",
    "CREATE INDEX push_sent_user ON push_sent (user_id)",
    "CREATE INDEX push_sent_decision ON push_sent (decision_id)",
    """CREATE TABLE push_feedback (
        message_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        user_id TEXT NOT NULL,
        PRIMARY KEY (message_id, kind)
    )""",
    """CREATE TABLE push_conversions (
        decision_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        clicked_message TEXT,
        PRIMARY KEY (decision_id, item_id)
    )""",
)


def upgrade() -> None:
    for statement in _UP:
        op.execute(statement)


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.execute(f"DROP TABLE {table}")
