"""API keys: scopes, tenants, stored hashed in a small SQLite file (``auth.keys_path``).

A key is ``sck_<key id>_<secret>``: the id is 12 random hex digits (public, used to find
the row), the secret 256 random bits (base64url). Only SHA-256 of the whole key is
stored; a presented key is hashed and compared in constant time. The secret is shown
once, by ``shopcast keys create``. Revoked keys stay listed (with ``revoked_at``) and
never authenticate again.

Scopes: ``ingest`` (``POST /v1/events``), ``read`` (recommendations and other reads),
``admin`` (everything, including writes to the catalog and users, models, privacy
operations); a key may hold several. Each key belongs to one tenant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from shopcast.errors import NotFoundError, StorageError, ValidationError
from shopcast.privacy.tenants import DEFAULT_TENANT, check_tenant

Scope = Literal["ingest", "read", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
_TOKEN = re.compile(r"^sck_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
_SCHEMA = """CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    scopes TEXT NOT NULL,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
)"""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    scopes: frozenset[Scope]
    tenant: str
    name: str
    created_at: float
    revoked_at: float | None = None

    def allows(self, scope: Scope) -> bool:
        """``admin`` allows everything; otherwise the scope must be held."""
        return "admin" in self.scopes or scope in self.scopes

    def as_dict(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "scopes": sorted(self.scopes),
            "tenant": self.tenant,
            "name": self.name,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> frozenset[Scope]:
    out: set[Scope] = set()
    for s in scopes:
        if s not in SCOPES:
            raise ValidationError(f"unknown scope {s!r}; one of {', '.join(SCOPES)}")
        out.add(s)
    if not out:
        raise ValidationError(f"a key needs at least one scope: {', '.join(SCOPES)}")
    return frozenset(out)


class KeyStore:
    """The hashed keys; safe to share between threads and processes (SQLite WAL)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the key store {self.path!r}: {exc}") from exc

    def create(
        self, scopes: Iterable[str], *, tenant: str = DEFAULT_TENANT, name: str = ""
    ) -> tuple[ApiKey, str]:
        """A new key and its secret token (shown once; only its hash is kept)."""
        checked = check_scopes(scopes)
        check_tenant(tenant)
        key_id = os.urandom(6).hex()
        secret = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        token = f"sck_{key_id}_{secret}"
        key = ApiKey(key_id, checked, tenant, name, time.time())
        with self._lock:
            self._conn.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                [key_id, _digest(token), ",".join(sorted(checked)), tenant, name, key.created_at],
            )
        return key, token

    def verify(self, token: str) -> ApiKey | None:
        """The live key whose token this is, else None (constant-time hash comparison)."""
        match = _TOKEN.match(token)
        if match is None:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT key_id, hash, scopes, tenant, name, created_at, revoked_at "
                "FROM api_keys WHERE key_id = ?",
                [match.group(1)],
            ).fetchone()
        if row is None or not hmac.compare_digest(row[1], _digest(token)) or row[6] is not None:
            return None
        return _key(row)

    def list(self) -> list[ApiKey]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT key_id, hash, scopes, tenant, name, created_at, revoked_at "
                "FROM api_keys ORDER BY created_at, key_id"
            ).fetchall()
        return [_key(r) for r in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key for good; ``NotFoundError`` for an unknown id."""
        with self._lock:
            self._conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                [time.time(), key_id],
            )
            known = self._conn.execute(
                "SELECT COUNT(*) FROM api_keys WHERE key_id = ?", [key_id]
            ).fetchone()[0]
        if not known:
            raise NotFoundError(f"no API key {key_id!r}")
        return next(k for k in self.list() if k.key_id == key_id)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _key(row: tuple[object, ...]) -> ApiKey:
    key_id, _, scopes, tenant, name, created, revoked = row
    return ApiKey(
        key_id=str(key_id),
        scopes=check_scopes(str(scopes).split(",")),
        tenant=str(tenant),
        name=str(name),
        created_at=float(created),  # type: ignore[arg-type]
        revoked_at=None if revoked is None else float(revoked),  # type: ignore[arg-type]
    )
