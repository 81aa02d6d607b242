"""Helpers of the online-state tests (the shop is the SYNTHETIC simulated shop)."""

from __future__ import annotations

from pathlib import Path

from shopcast.config import Settings
from shopcast.simulate import SimulatedShop


def prepare_shop(tmp_path: Path, shop: SimulatedShop) -> Settings:
    from shopcast.ingest.importer import import_events, import_items, import_users
    from shopcast.storage import open_store
    from shopcast.training.bundle import save_bundle, train_bundle

    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
    )
    store = open_store(settings.database_url)
    import_items(store, shop.items)
    import_users(store, shop.users)
    import_events(store, shop.events)
    save_bundle(train_bundle(store, settings.recommend), settings.model_dir)
    store.close()
    return settings
