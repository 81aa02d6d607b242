"""API keys (``shopcast.privacy.apikeys.PgKeyStore``) and retrain requests
(``shopcast.training.registry_pg``) in PostgreSQL, so every API process and host
authenticates against the same keys and every retrainer sees an erasure's request.

The key table is the one ``KeyStore`` keeps in SQLite (only SHA-256 of a key is stored).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,
            hash TEXT NOT NULL,
            scopes TEXT NOT NULL,
            tenant TEXT NOT NULL,
            name TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        )"""
    )
    op.execute(
        """CREATE TABLE model_retrain (
            id BIGSERIAL PRIMARY KEY,
            reason TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL
        )"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE model_retrain")
    op.execute("DROP TABLE api_keys")
