"""The push outbox: messages and their deliveries (``shopcast.push._outbox_sql``).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_UP = (
    """CREATE TABLE push_messages (
        message_id TEXT COLLATE "C" PRIMARY KEY,
        decision_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        trigger TEXT NOT NULL,
        channel TEXT NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        items TEXT NOT NULL,
        data TEXT NOT NULL,
        priority INTEGER NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX push_messages_user ON push_messages (user_id, created_at)",
    """CREATE TABLE push_deliveries (
        delivery_id TEXT PRIMARY KEY,
        message_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        target TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        last_error TEXT,
        delivered_at DOUBLE PRECISION,
        seq BIGINT GENERATED ALWAYS AS IDENTITY
    )""",
    "CREATE INDEX push_deliveries_due ON push_deliveries (status, next_attempt_at, seq)",
    "CREATE INDEX push_deliveries_user ON push_deliveries (user_id)",
    "CREATE INDEX push_deliveries_message ON push_deliveries (message_id)",
)


def upgrade() -> None:
    for statement in _UP:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE push_deliveries")
    op.execute("DROP TABLE push_messages")
