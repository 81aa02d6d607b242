"""Tenants: each has its own store and model directory, derived from the settings.

The ``default`` tenant uses ``database_url`` and ``model_dir`` as configured. Another
tenant ``T`` uses, next to them, ``<dir>/tenants/T/<name>``: with the defaults
``shopcast-data/tenants/T/shopcast.db`` and ``shopcast-data/tenants/T/models``
(``memory://`` becomes ``memory://T``; on PostgreSQL, schema ``<schema>_T`` of the same
database). Tenant ids are short lower-case names, so they
can never name a path outside ``tenants/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from shopcast.config import Settings
from shopcast.errors import ConfigError, StorageError
from shopcast.storage._sqlite import sqlite_path

DEFAULT_TENANT = "default"
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_tenant(tenant: str) -> str:
    """The tenant id, or ``ConfigError`` when it is not ``[a-z0-9][a-z0-9_-]{0,62}``."""
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise ConfigError(
            f"tenant {tenant!r}: 1-63 characters, lower-case letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return tenant


def _beside(path: Path, tenant: str) -> Path:
    return path.parent / "tenants" / tenant / path.name


def tenant_settings(settings: Settings, tenant: str) -> Settings:
    """The settings of ``tenant``: the same, with its own database URL and model dir."""
    check_tenant(tenant)
    if tenant == DEFAULT_TENANT:
        return settings
    url = settings.database_url
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        new_url = f"memory://{tenant}"
    elif scheme == "sqlite":
        path = sqlite_path(url)  # a private in-memory database stays one
        new_url = url if path == ":memory:" else f"sqlite:///{_beside(Path(path), tenant)}"
    elif scheme in ("postgresql", "postgres"):
        from shopcast.storage._postgres import tenant_url

        new_url = tenant_url(url, tenant)  # the same database, schema <schema>_<tenant>
    else:
        raise StorageError(
            f"tenants need a sqlite://, memory:// or postgresql:// database_url, not {url!r}"
        )
    from shopcast.online import with_namespace  # shared online state: a key prefix each

    state = settings.state.model_copy(update={"url": with_namespace(settings.state.url, tenant)})
    return settings.model_copy(
        update={
            "database_url": new_url,
            "model_dir": _beside(settings.model_dir, tenant),
            "state": state,
        }
    )
