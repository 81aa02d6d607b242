"""Shared fixtures. Data here is SYNTHETIC (the simulated shop) unless a test says otherwise."""

from __future__ import annotations

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
