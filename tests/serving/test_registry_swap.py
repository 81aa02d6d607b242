"""Model registry (promote, rollback) and hot swap in a running server under load."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shopcast.api import create_app
from shopcast.cli import app as cli
from shopcast.config import Settings
from shopcast.errors import ModelError, NotFoundError
from shopcast.simulate import SimulatedShop
from shopcast.storage import open_store
from shopcast.training.bundle import save_bundle, train_bundle
from shopcast.training.registry import ModelRegistry


def _train_versions(settings: Settings, shop: SimulatedShop, n: int) -> list[str]:
    from shopcast.ingest.importer import import_events, import_items

    store = open_store(settings.database_url)
    try:
        import_items(store, shop.items)
        import_events(store, shop.events)
        versions = []
        for _ in range(n):
            bundle = train_bundle(store, settings.recommend)
            save_bundle(bundle, settings.model_dir, promote=False)
            versions.append(bundle.version)
        return versions
    finally:
        store.close()


def test_promote_and_rollback_walk_back(settings: Settings, small_shop: SimulatedShop) -> None:
    v1, v2, v3 = _train_versions(settings, small_shop, 3)
    registry = ModelRegistry(settings.model_dir)
    assert registry.current() is None
    with pytest.raises(ModelError):
        registry.rollback()
    for v in (v1, v2, v3):
        registry.promote(v)
    assert registry.rollback() == v2
    assert registry.rollback() == v1  # walks back, does not toggle
    assert registry.current() == v1
    with pytest.raises(ModelError):
        registry.rollback()
    with pytest.raises(NotFoundError):
        registry.promote("v-nope")
    with pytest.raises(NotFoundError):
        registry.promote("../etc")
    listed = registry.versions()
    assert {m.version for m in listed} == {v1, v2, v3}
    assert [m.current for m in listed].count(True) == 1
    manifest = listed[0].manifest
    assert manifest["models"]["covisit"] == "covisit"
    assert manifest["data_window"]["from_ts"] <= manifest["data_window"]["to_ts"]
    assert manifest["config"]["covisit_window"] == settings.recommend.covisit_window


def test_hot_swap_under_load_fails_no_request(
    settings: Settings, small_shop: SimulatedShop
) -> None:
    v1, v2 = _train_versions(settings, small_shop, 2)
    ModelRegistry(settings.model_dir).promote(v1)
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/health").json()["model_version"] == v1
        statuses: list[int] = []
        versions: set[str] = set()
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                r = client.get("/v1/users/sim-user-00002/recommendations?k=5")
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.add(r.json()["model_version"])

        workers = [threading.Thread(target=hammer) for _ in range(3)]
        for w in workers:
            w.start()
        try:
            for target in (v2, v1, v2):
                r = client.post(f"/v1/models/{target}/promote")
                assert r.status_code == 200 and r.json()["serving"] == target
            r = client.post("/v1/models/rollback")
            assert r.json()["serving"] == v1
        finally:
            stop.set()
            for w in workers:
                w.join()
        assert statuses and set(statuses) == {200}
        assert versions == {v1, v2}
        listing = client.get("/v1/models").json()
        assert listing["serving"] == v1 and len(listing["versions"]) == 2
        assert client.post("/v1/models/v-missing/promote").status_code == 404


def test_a_server_follows_a_promotion_made_elsewhere(
    settings: Settings, small_shop: SimulatedShop
) -> None:
    v1, v2 = _train_versions(settings, small_shop, 2)
    registry = ModelRegistry(settings.model_dir)
    registry.promote(v1)
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        registry.promote(v2)  # e.g. `shopcast models promote` on another host
        assert engine.reload_if_changed() is True
        assert client.get("/v1/health").json()["model_version"] == v2
        assert engine.reload_if_changed() is False


def test_models_cli(
    settings: Settings, small_shop: SimulatedShop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = _train_versions(settings, small_shop, 2)
    monkeypatch.setenv("SHOPCAST_MODEL_DIR", str(settings.model_dir))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    assert runner.invoke(cli, ["models", "promote", v1]).exit_code == 0
    assert runner.invoke(cli, ["models", "promote", v2]).exit_code == 0
    listed = runner.invoke(cli, ["models", "list"])
    assert listed.exit_code == 0 and v1 in listed.output and v2 in listed.output
    r = runner.invoke(cli, ["models", "rollback"])
    assert r.exit_code == 0 and v1 in r.output
    r = runner.invoke(cli, ["models", "promote", "v-missing"])
    assert r.exit_code == 2 and "not found" in r.output
