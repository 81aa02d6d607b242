"""API keys: scopes, tenants, stored hashed (``open_key_store`` picks where).

With a ``postgresql://`` ``database_url`` the keys live in that database (table
``api_keys`` of its schema, ``PgKeyStore``), so every API process and host checks the
same keys and a revocation counts everywhere at the next request; otherwise in a small
SQLite file (``auth.keys_path``, ``KeyStore``). Both follow ``ApiKeyStore``.

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
import contextlib
import hashlib
import hmac
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, get_args

from shopcast.errors import NotFoundError, StorageError, ValidationError
from shopcast.privacy.tenants import DEFAULT_TENANT, check_tenant

if TYPE_CHECKING:
    from shopcast.config import Settings

log = logging.getLogger(__name__)

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


#: The columns every backend reads, in this order (``_key``).
COLUMNS = "key_id, hash, scopes, tenant, name, created_at, revoked_at"


class ApiKeyStore(Protocol):
    """Where the hashed keys are kept (``KeyStore``: SQLite; ``PgKeyStore``: PostgreSQL)."""

    def create(
        self, scopes: Iterable[str], *, tenant: str = DEFAULT_TENANT, name: str = ""
    ) -> tuple[ApiKey, str]: ...

    def verify(self, token: str) -> ApiKey | None: ...

    def list(self) -> list[ApiKey]: ...

    def revoke(self, key_id: str) -> ApiKey: ...

    def close(self) -> None: ...


def new_key(scopes: Iterable[str], tenant: str, name: str) -> tuple[ApiKey, str, str]:
    """A fresh key, its secret token and the token's digest (what is stored)."""
    checked = check_scopes(scopes)
    check_tenant(tenant)
    key_id = os.urandom(6).hex()
    secret = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    token = f"sck_{key_id}_{secret}"
    return ApiKey(key_id, checked, tenant, name, time.time()), token, _digest(token)


def token_key_id(token: str) -> str | None:
    """The key id of a well-formed token, else None."""
    match = _TOKEN.match(token)
    return None if match is None else match.group(1)


def live_key(row: tuple[object, ...] | None, token: str) -> ApiKey | None:
    """The key of ``row`` when ``token`` hashes to its digest and it is not revoked."""
    if row is None or not hmac.compare_digest(str(row[1]), _digest(token)) or row[6] is not None:
        return None
    return _key(row)


def open_key_store(settings: Settings) -> ApiKeyStore:
    """The key store of a deployment: PostgreSQL's with a ``postgresql://``
    ``database_url`` (shared by every process and host), else ``auth.keys_path``.

    On PostgreSQL, while the key table is empty, the keys of an existing
    ``auth.keys_path`` file are imported (hashes, scopes, tenants and revocations as they
    are), so a deployment moving to PostgreSQL keeps its keys; the file is not used after.
    """
    if settings.database_url.split("://", 1)[0].lower() in ("postgresql", "postgres"):
        from shopcast.privacy._apikeys_pg import PgKeyStore

        store = PgKeyStore(settings.database_url)
        try:
            path = Path(settings.auth.keys_path)
            if path.is_file() and store.empty():
                try:
                    done = store.import_rows(sqlite_rows(path))
                except StorageError as exc:  # not a key file: nothing to keep from it
                    log.warning("API keys not imported from %s: %s", path, exc)
                    done = 0
                if done:
                    log.warning(
                        "imported %d API keys from %s into PostgreSQL (%s); that file is "
                        "no longer read",
                        done,
                        path,
                        store.name,
                    )
        except BaseException:
            store.close()
            raise
        return store
    return KeyStore(settings.auth.keys_path)


def sqlite_rows(path: Path | str) -> list[tuple[object, ...]]:
    """Every row (``COLUMNS``) of a SQLite key file, revoked keys included."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return list(conn.execute(f"SELECT {COLUMNS} FROM api_keys ORDER BY created_at"))
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read the key store {str(path)!r}: {exc}") from exc


class KeyStore:
    """The hashed keys in SQLite; safe to share between threads and processes (WAL)."""

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
        key, token, digest = new_key(scopes, tenant, name)
        with self._lock:
            self._conn.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                [key.key_id, digest, ",".join(sorted(key.scopes)), tenant, name, key.created_at],
            )
        return key, token

    def verify(self, token: str) -> ApiKey | None:
        """The live key whose token this is, else None (constant-time hash comparison)."""
        key_id = token_key_id(token)
        if key_id is None:
            return None
        with self._lock:
            row = self._conn.execute(
                f"SELECT {COLUMNS} FROM api_keys WHERE key_id = ?", [key_id]
            ).fetchone()
        return live_key(row, token)

    def list(self) -> list[ApiKey]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {COLUMNS} FROM api_keys ORDER BY created_at, key_id"
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

    def version(self) -> int:
        """A number that changes whenever any connection (of any process) commits to
        the key file (SQLite's ``data_version``): a few microseconds, no table read.
        Caches of ``verify`` (``shopcast.api.keycache``) use it to stay exact."""
        with self._lock:
            try:
                return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read the key store {self.path!r}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()


#: The SQLite store under the name the protocol's other backend pairs with.
SqliteKeyStore = KeyStore


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
