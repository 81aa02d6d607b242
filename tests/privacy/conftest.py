"""Fixtures of the privacy and security tests: settings with auth on, keys, clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shopcast.config import Settings
from shopcast.privacy.apikeys import KeyStore

HMAC_KEY = "test-hmac-key-0123456789abcdef0123456789"


@pytest.fixture
def secure_settings(tmp_path: Path) -> Settings:
    """Auth on (as shipped), pseudonymization and field encryption on."""
    return Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
        auth={"enabled": True, "keys_path": tmp_path / "keys.db"},
        privacy={"pseudonymize": True, "hmac_key": HMAC_KEY, "encrypt_users": True},
    )


@pytest.fixture
def keys(secure_settings: Settings) -> Iterator[KeyStore]:
    store = KeyStore(secure_settings.auth.keys_path)
    yield store
    store.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secure_client(secure_settings: Settings) -> Iterator[TestClient]:
    from shopcast.api import create_app

    with TestClient(create_app(secure_settings)) as c:
        yield c


def db_bytes(db: Path) -> bytes:
    """Every byte SQLite keeps for ``db`` (the file, its WAL and journal when present)."""
    parts = [Path(str(db) + suffix) for suffix in ("", "-wal", "-journal", "-shm")]
    return b"".join(p.read_bytes() for p in parts if p.exists())
