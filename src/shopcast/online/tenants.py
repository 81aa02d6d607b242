"""The tenant registry of the shared online state: which tenants have an event stream.

A process that serves every tenant (``shopcast worker``) asks ``known_tenants``:

- ``default``, always;
- every tenant an API process has opened (``register``, called by
  ``api.auth.open_tenant``): the Redis set ``<prefix>tenants``, under the deployment's
  prefix (the ``default`` tenant's), kept as long as the rest of the online state;
- every tenant holding an API key (``privacy.apikeys``: PostgreSQL's key table with a
  ``postgresql://`` database, else the ``auth.keys_path`` file when it exists; revoked
  keys count too, their tenant's stream may still hold events).

A tenant's stream is ``<prefix><tenant>:events`` (``privacy.tenants.tenant_settings``);
a worker that finds a new tenant creates the consumer group from the start of that
stream, so the events published before it was found are consumed too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from shopcast.config import Settings
from shopcast.errors import ShopcastError, StateUnavailableError
from shopcast.privacy.tenants import DEFAULT_TENANT, check_tenant

log = logging.getLogger(__name__)

REGISTRY_KEY = "tenants"


def register(settings: Settings, tenant: str) -> bool:
    """Add ``tenant`` to the registry (``settings``: the deployment's, not the tenant's);
    False with the embedded state or while Redis is down (the key store still names
    tenants with keys)."""
    from shopcast.online import connect, is_shared

    check_tenant(tenant)
    if tenant == DEFAULT_TENANT or not is_shared(settings.state.url):
        return False
    conn = connect(settings.state)
    try:
        conn.call(lambda: conn.client.sadd(conn.key(REGISTRY_KEY), tenant))
        return True
    except StateUnavailableError:
        return False
    finally:
        conn.close()


class TenantRegistry:
    """``tenants()`` as often as needed; the Redis connection and a PostgreSQL key
    store are opened once (``close`` them)."""

    def __init__(self, settings: Settings) -> None:
        from shopcast.online import connect, is_shared

        self.settings = settings
        self._conn = connect(settings.state) if is_shared(settings.state.url) else None
        self._pg: Any = None

    def _key_tenants(self) -> set[str]:
        """Tenants of the API keys (none when there is no key store)."""
        settings = self.settings
        if settings.database_url.split("://", 1)[0].lower() in ("postgresql", "postgres"):
            if self._pg is None:
                from shopcast.privacy._apikeys_pg import PgKeyStore

                self._pg = PgKeyStore(settings.database_url)
            return {k.tenant for k in self._pg.list()}
        path = Path(settings.auth.keys_path)
        if not path.is_file():  # never create a key file here
            return set()
        from shopcast.privacy.apikeys import sqlite_rows

        return {str(row[3]) for row in sqlite_rows(path)}

    def tenants(self) -> list[str]:
        """Every tenant of the registry and the key store, ``default`` first, sorted.
        Raises ``StateUnavailableError`` while Redis is down."""
        found: set[str] = set()
        conn = self._conn
        if conn is not None:
            found |= set(conn.call(lambda: conn.client.smembers(conn.key(REGISTRY_KEY))))
        try:
            found |= self._key_tenants()
        except ShopcastError as exc:  # the key store unreadable now: the registry counts
            log.warning("tenants of the API keys unavailable: %s", exc)
        valid = set()
        for name in found:
            try:
                valid.add(check_tenant(name))
            except ShopcastError:
                log.warning("ignoring invalid tenant name %r in the registry", name)
        valid.discard(DEFAULT_TENANT)
        return [DEFAULT_TENANT, *sorted(valid)]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._pg is not None:
            self._pg.close()


def known_tenants(settings: Settings) -> list[str]:
    """``TenantRegistry(settings).tenants()``, once."""
    registry = TenantRegistry(settings)
    try:
        return registry.tenants()
    finally:
        registry.close()
