"""Shared fixtures. Data here is SYNTHETIC (the simulated shop) unless a test says otherwise."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shopcast.config import Settings, default_data_path
from shopcast.simulate import SimulatedShop, simulate_shop


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's shopcast.toml or SHOPCAST_* overrides."""
    monkeypatch.chdir(tmp_path)
    for var in ("SHOPCAST_CONFIG", "SHOPCAST_DATABASE_URL", "SHOPCAST_MODEL_DIR"):
        monkeypatch.delenv(var, raising=False)
    # API keys are on by default; tests of other features run without them (the
    # privacy tests turn auth on explicitly).
    monkeypatch.setenv("SHOPCAST_AUTH__ENABLED", "false")


@pytest.fixture(scope="session")
def data_path() -> Path:
    """The shared real datasets (tests that need them skip when absent)."""
    return default_data_path().resolve()


@pytest.fixture(scope="session")
def small_shop() -> SimulatedShop:
    return simulate_shop(n_users=60, n_items=80, sessions_per_user=3, seed=3)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
        auth={"enabled": False},
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from shopcast.api import create_app

    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def shop_client(settings: Settings, small_shop: SimulatedShop) -> Iterator[TestClient]:
    """An API over a store pre-loaded with the small simulated shop and a trained model."""
    from shopcast.api import create_app
    from shopcast.ingest.importer import import_events, import_items, import_users
    from shopcast.storage import open_store
    from shopcast.training.bundle import save_bundle, train_bundle

    store = open_store(settings.database_url)
    import_items(store, small_shop.items)
    import_users(store, small_shop.users)
    import_events(store, small_shop.events)
    save_bundle(train_bundle(store, settings.recommend), settings.model_dir)
    store.close()
    with TestClient(create_app(settings)) as c:
        yield c


# --- Real services (Redis, PostgreSQL) -------------------------------------------------------
# Tests that need them use these fixtures. Locally they skip when a service is down; CI sets
# SHOPCAST_REQUIRE_SERVICES=1 (in .ci/run, after starting both), which turns a skip into a failure.
REDIS_URL = os.environ.get("SHOPCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "SHOPCAST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _service_missing(name: str, error: Exception) -> None:
    if os.environ.get("SHOPCAST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{name} is required (SHOPCAST_REQUIRE_SERVICES=1) but unreachable: {error}")
    pytest.skip(f"{name} unreachable: {error}")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL plus a unique key prefix (``?prefix=`` query) owned by this test.

    Every key under the prefix is deleted afterwards; nothing else in the server is touched
    (other processes share it)."""
    try:
        import redis
    except ImportError as e:  # pragma: no cover - the dev extra installs it
        _service_missing("redis (python package)", e)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as e:
        _service_missing("Redis", e)
    prefix = f"sctest:{uuid.uuid4().hex[:12]}:"
    yield f"{REDIS_URL}?prefix={prefix}"
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose ``options`` put every table in a fresh schema, dropped afterwards."""
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover
        _service_missing("psycopg", e)
    schema = f"sctest_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception as e:
        _service_missing("PostgreSQL", e)
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
