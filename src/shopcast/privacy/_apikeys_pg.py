"""API keys in PostgreSQL (table ``api_keys``, Alembic revision 0004).

Used when ``database_url`` is ``postgresql://``: the keys sit in the schema of that URL
(the ``default`` tenant's), one table for every tenant, as in the SQLite file. Every
``verify`` reads the row (a primary-key lookup on a pooled connection), so a key
revoked by any process or host is refused by every other one at its next request.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from shopcast.errors import NotFoundError
from shopcast.privacy.apikeys import COLUMNS, ApiKey, _key, live_key, new_key, token_key_id
from shopcast.privacy.tenants import DEFAULT_TENANT
from shopcast.storage._postgres import PgDatabase


class PgKeyStore:
    """``ApiKeyStore`` on PostgreSQL; safe to share between threads."""

    def __init__(self, database_url: str) -> None:
        self._db = PgDatabase(database_url)  # migrated to HEAD on open
        self.name = self._db.name

    def create(
        self, scopes: Iterable[str], *, tenant: str = DEFAULT_TENANT, name: str = ""
    ) -> tuple[ApiKey, str]:
        key, token, digest = new_key(scopes, tenant, name)
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO api_keys (key_id, hash, scopes, tenant, name, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [key.key_id, digest, ",".join(sorted(key.scopes)), tenant, name, key.created_at],
            )
        return key, token

    def verify(self, token: str) -> ApiKey | None:
        key_id = token_key_id(token)
        if key_id is None:
            return None
        sql = f"SELECT {COLUMNS} FROM api_keys WHERE key_id = %s"
        row = self._db.read(lambda c: c.execute(sql, [key_id]).fetchone())
        return live_key(row, token)

    def list(self) -> list[ApiKey]:
        sql = f"SELECT {COLUMNS} FROM api_keys ORDER BY created_at, key_id"
        return [_key(r) for r in self._db.read(lambda c: c.execute(sql).fetchall())]

    def revoke(self, key_id: str) -> ApiKey:
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE key_id = %s AND revoked_at IS NULL",
                [time.time(), key_id],
            )
            row = conn.execute(
                f"SELECT {COLUMNS} FROM api_keys WHERE key_id = %s", [key_id]
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no API key {key_id!r}")
        return _key(row)

    def empty(self) -> bool:
        row = self._db.read(
            lambda c: c.execute("SELECT NOT EXISTS (SELECT 1 FROM api_keys)").fetchone()
        )
        return bool(row and row[0])

    def import_rows(self, rows: Iterable[tuple[object, ...]]) -> int:
        """Add keys as stored elsewhere (``COLUMNS`` order: hashes, not secrets); a key
        id already here is left as it is. Returns how many were added."""
        added = 0
        with self._db.transaction() as conn:
            for row in rows:
                _key(row)  # checked: known scopes, numbers
                cur = conn.execute(
                    f"INSERT INTO api_keys ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (key_id) DO NOTHING",
                    list(row),
                )
                added += cur.rowcount
        return added

    def close(self) -> None:
        self._db.close()
