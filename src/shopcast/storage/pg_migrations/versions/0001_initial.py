"""The event log, the catalog, the profiles and the model registry's metadata.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Keys sort byte-wise (COLLATE "C"), as in SQLite: repository scans page by key order.
_UP = (
    """CREATE TABLE events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id TEXT NOT NULL,
        type TEXT NOT NULL,
        user_id TEXT,
        session_id TEXT,
        item_id TEXT,
        ts DOUBLE PRECISION NOT NULL,
        value DOUBLE PRECISION,
        quantity DOUBLE PRECISION,
        price DOUBLE PRECISION,
        query TEXT,
        recommendation_id TEXT,
        context TEXT
    )""",
    "CREATE UNIQUE INDEX events_event_id ON events (event_id)",
    "CREATE INDEX events_user_ts ON events (user_id, ts) WHERE user_id IS NOT NULL",
    "CREATE INDEX events_session_ts ON events (session_id, ts) WHERE session_id IS NOT NULL",
    "CREATE INDEX events_ts ON events (ts)",
    'CREATE TABLE items (item_id TEXT COLLATE "C" PRIMARY KEY, doc TEXT NOT NULL)',
    'CREATE TABLE users (user_id TEXT COLLATE "C" PRIMARY KEY, doc TEXT NOT NULL)',
    """CREATE TABLE model_versions (
        version TEXT PRIMARY KEY,
        created_at DOUBLE PRECISION NOT NULL,
        manifest JSONB NOT NULL
    )""",
    """CREATE TABLE model_current (
        one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        version TEXT NOT NULL,
        promoted_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE model_history (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        version TEXT NOT NULL,
        previous TEXT,
        at DOUBLE PRECISION NOT NULL,
        action TEXT NOT NULL
    )""",
)
_DOWN = ("model_history", "model_current", "model_versions", "users", "items", "events")


def upgrade() -> None:
    for statement in _UP:
        op.execute(statement)


def downgrade() -> None:
    for table in _DOWN:
        op.execute(f"DROP TABLE {table}")
