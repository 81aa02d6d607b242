"""The model registry's metadata in PostgreSQL, and privacy (erasure, retention, field
encryption, pseudonymization) on the PostgreSQL backend. Data here is SYNTHETIC."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shopcast.api import create_app
from shopcast.config import Settings
from shopcast.domain import Event, Item, User
from shopcast.errors import NoRollbackError, NotFoundError
from shopcast.privacy.crypto import EncryptedUsers, new_key, open_private_store
from shopcast.privacy.pseudonym import Pseudonymizer
from shopcast.privacy.retention import DAY, apply_retention
from shopcast.simulate import SimulatedShop
from shopcast.storage import Store, open_store
from shopcast.storage._postgres import split_url
from shopcast.training.bundle import new_version, save_bundle, train_bundle
from shopcast.training.registry import ModelRegistry, open_registry
from shopcast.training.registry_pg import PgModelRegistry

HMAC_KEY = "test-hmac-key-0123456789abcdef0123456789"


def pg_settings(url: str, tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        environment="test",
        database_url=url,
        model_dir=tmp_path / "models",
        auth={"enabled": False},
        **extra,  # type: ignore[arg-type]
    )


def loaded(store: Store, shop: SimulatedShop) -> Store:
    store.items.upsert(shop.items)
    store.users.upsert(shop.users)
    from shopcast.ingest.importer import import_events

    import_events(store, shop.events)
    return store


def sql(url: str, query: str) -> list[tuple[object, ...]]:
    conninfo, _ = split_url(url)
    with psycopg.connect(conninfo) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def trained(postgres_url: str, tmp_path: Path, small_shop: SimulatedShop) -> Settings:
    """Settings on PostgreSQL with two saved versions; the second is CURRENT."""
    settings = pg_settings(postgres_url, tmp_path)
    store = loaded(open_store(postgres_url), small_shop)
    registry = open_registry(settings)
    try:
        for _ in range(2):
            bundle = train_bundle(store, settings.recommend)
            save_bundle(bundle, settings.model_dir, registry=registry)
            time.sleep(0.01)  # distinct created_at
    finally:
        store.close()
    return settings


def test_open_registry_picks_postgresql_by_url(trained: Settings, tmp_path: Path) -> None:
    assert isinstance(open_registry(trained), PgModelRegistry)
    sqlite = trained.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'x.db'}"})
    registry = open_registry(sqlite)
    assert type(registry) is ModelRegistry


def test_versions_current_and_history_live_in_postgresql(trained: Settings) -> None:
    registry = open_registry(trained)
    old, new = [v.version for v in reversed(registry.versions())]
    assert registry.current() == new
    rows = sql(trained.database_url, "SELECT version FROM model_versions ORDER BY created_at")
    assert [r[0] for r in rows] == [old, new]
    assert sql(trained.database_url, "SELECT version FROM model_current") == [(new,)]
    assert [(h["version"], h["previous"]) for h in registry.history()] == [(old, None), (new, old)]
    # Another process (another registry object) sees the same; the directory mirrors it.
    other = open_registry(trained)
    assert other.current() == new and other.current_stamp()[0] == new
    assert ModelRegistry(trained.model_dir).current() == new

    assert other.rollback() == old
    assert registry.current() == old
    assert [h["action"] for h in registry.history()] == ["promote", "promote", "rollback"]
    with pytest.raises(NoRollbackError):
        registry.rollback()
    with pytest.raises(NotFoundError):
        registry.promote("no-such-version")
    assert registry.current() == old


def test_postgresql_is_the_authority_over_the_directory(trained: Settings) -> None:
    registry = open_registry(trained)
    old, new = [v.version for v in reversed(registry.versions())]
    (trained.model_dir / "CURRENT").write_text(old)  # a stale mirror is ignored
    assert registry.current() == new
    assert [v.version for v in registry.versions() if v.current] == [new]


def test_concurrent_promotions_form_one_chain(trained: Settings) -> None:
    registry = open_registry(trained)
    versions = [v.version for v in registry.versions()]
    errors: list[BaseException] = []

    def promote(n: int) -> None:
        try:
            for k in range(5):
                open_registry(trained).promote(versions[(n + k) % 2])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    history = registry.history()
    assert len(history) == 2 + 20
    # No lost update: each promotion's "previous" is the version promoted just before it.
    for before, entry in itertools.pairwise(history):
        assert entry["previous"] == before["version"]
    assert registry.current() == history[-1]["version"]


def test_the_api_follows_a_promotion_made_elsewhere(trained: Settings) -> None:
    registry = open_registry(trained)
    old, new = [v.version for v in reversed(registry.versions())]
    with TestClient(create_app(trained)) as client:
        assert client.get("/v1/models").json()["serving"] == new
        conninfo, _ = split_url(trained.database_url)
        with psycopg.connect(conninfo) as conn:  # e.g. a promotion from another host
            conn.execute("UPDATE model_current SET version = %s", [old])
        engine = client.app.state.engine  # type: ignore[attr-defined]
        assert engine.reload_if_changed() is True
        listed = client.get("/v1/models").json()
        assert listed["serving"] == old
        assert [v["version"] for v in listed["versions"] if v["current"]] == [old]
        promoted = client.post(f"/v1/models/{new}/promote")
        assert promoted.status_code == 200 and promoted.json()["serving"] == new
        assert sql(trained.database_url, "SELECT version FROM model_current") == [(new,)]


def test_the_cli_uses_the_postgresql_registry(trained: Settings) -> None:
    from shopcast.cli import app

    env = {
        "SHOPCAST_DATABASE_URL": trained.database_url,
        "SHOPCAST_MODEL_DIR": str(trained.model_dir),
    }
    old, new = [v.version for v in reversed(open_registry(trained).versions())]
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list"], env=env)
    assert listed.exit_code == 0 and old in listed.output and new in listed.output
    assert runner.invoke(app, ["models", "rollback"], env=env).exit_code == 0
    assert sql(trained.database_url, "SELECT version FROM model_current") == [(old,)]
    assert runner.invoke(app, ["models", "promote", new], env=env).exit_code == 0
    assert open_registry(trained).current() == new


# --- privacy on PostgreSQL ------------------------------------------------------------------


def test_erasure_encryption_and_pseudonyms_on_postgresql(
    postgres_url: str, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    k1, k2 = new_key(), new_key()
    privacy = {"pseudonymize": True, "hmac_key": HMAC_KEY, "encrypt_users": True}
    privacy |= {"encryption_keys": {"k1": k1}, "active_key": "k1"}
    settings = pg_settings(postgres_url, tmp_path, privacy=privacy)
    p = Pseudonymizer.from_settings(settings.privacy)
    store = open_private_store(settings)
    try:
        loaded(store, small_shop)
        store.users.upsert([p.user_record(User(user_id="eve", region="Tallinn", age=33))])
        save_bundle(
            train_bundle(store, settings.recommend),
            settings.model_dir,
            registry=open_registry(settings),
        )
        first = open_registry(settings).current()
    finally:
        store.close()

    item = small_shop.items[0].item_id
    with TestClient(create_app(settings)) as c:
        eve = [
            {"event_id": f"eve-{n}", "type": "view", "user_id": "eve", "item_id": item}
            for n in range(4)
        ]
        assert c.post("/v1/events", json=eve).status_code == 202
        assert c.get("/v1/users/eve").json()["region"] == "Tallinn"
        # What PostgreSQL holds: the pseudonym, never the raw id; the region sealed.
        pseudonym = p.user("eve")
        assert sql(postgres_url, "SELECT count(*) FROM events WHERE user_id = 'eve'") == [(0,)]
        assert (
            sql(postgres_url, f"SELECT count(*) FROM events WHERE user_id = '{pseudonym}'")[0][0]
            >= 4
        )
        docs = " ".join(str(r[0]) for r in sql(postgres_url, "SELECT doc FROM users"))
        assert "Tallinn" not in docs and '"eve"' not in docs

        r = c.delete("/v1/users/eve")
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["removed"]["events"] >= 4 and report["removed"]["user_record"] == 1
        assert c.get("/v1/users/eve").status_code == 404
    assert sql(postgres_url, f"SELECT count(*) FROM events WHERE user_id = '{pseudonym}'") == [(0,)]
    assert sql(postgres_url, f"SELECT count(*) FROM users WHERE user_id = '{pseudonym}'") == [(0,)]
    # The unlearned copy is CURRENT in PostgreSQL's registry.
    current = sql(postgres_url, "SELECT version FROM model_current")[0][0]
    assert current == report["model_version"] != first

    # Key rotation reseals every record in PostgreSQL.
    privacy |= {"encryption_keys": {"k1": k1, "k2": k2}, "active_key": "k2"}
    rotated = pg_settings(postgres_url, tmp_path, privacy=privacy)
    again = open_private_store(rotated)
    try:
        users = again.users
        assert isinstance(users, EncryptedUsers)
        counts = users.rotate()
        assert counts["resealed"] >= 1
        assert users.rotate()["resealed"] == 0
    finally:
        again.close()


def test_retention_on_postgresql(store_pg: Store) -> None:
    now = time.time()
    ages = [400, 200, 91, 89, 1]
    store_pg.events.append(
        [
            Event(
                event_id=f"e{a}", type="view", user_id="u1", item_id="i1", timestamp=now - a * DAY
            )
            for a in ages
        ]
    )
    assert apply_retention(store_pg, 90, now) == 3
    assert [e.event_id for _, e in store_pg.events.scan()] == ["e89", "e1"]
    store_pg.items.upsert([Item(item_id="i1")])
    assert store_pg.items.count() == 1


@pytest.fixture
def store_pg(postgres_url: str) -> object:
    store = open_store(postgres_url)
    yield store
    store.close()


def test_save_bundle_without_promotion_is_registered(
    trained: Settings, small_shop: SimulatedShop
) -> None:
    registry = open_registry(trained)
    current = registry.current()
    store = open_store(trained.database_url)
    try:
        bundle = train_bundle(store, trained.recommend)
    finally:
        store.close()
    bundle.version = new_version()
    save_bundle(bundle, trained.model_dir, promote=False, registry=registry)
    assert registry.current() == current
    assert bundle.version in {v.version for v in registry.versions()}
    assert sql(trained.database_url, "SELECT count(*) FROM model_versions") == [(3,)]


# --- tenants: a schema each ---------------------------------------------------------------


def test_schema_parameter_and_tenant_urls() -> None:
    from shopcast.errors import StorageError
    from shopcast.storage._postgres import tenant_url, url_schema

    conninfo, _ = split_url("postgresql://h/db?schema=shop_eu&pool_max_size=2")
    assert conninfo == "postgresql://h/db?options=-csearch_path%3Dshop_eu"
    conninfo, _ = split_url("postgresql://h/db?options=-cwork_mem%3D8MB&schema=s1")
    assert conninfo == "postgresql://h/db?options=-cwork_mem%3D8MB%20-csearch_path%3Ds1"
    assert url_schema("postgresql://h/db") is None
    for bad in ("Shop", "a b", "x" * 64, 'q"uote'):
        with pytest.raises(StorageError):
            url_schema(f"postgresql://h/db?schema={bad}")
    assert url_schema(tenant_url("postgresql://h/db?schema=shop", "eu-1")) == "shop_eu-1"
    from_options = tenant_url("postgresql://h/db?options=-csearch_path%3Dsctest_1", "acme")
    assert url_schema(from_options) == "sctest_1_acme"
    assert url_schema(tenant_url("postgresql://h/db", "acme")) == "shopcast_acme"
    with pytest.raises(StorageError):
        tenant_url("postgresql://h/db?schema=" + "s" * 60, "tenant")


def test_tenants_on_postgresql_get_a_schema_each(postgres_url: str, tmp_path: Path) -> None:
    from shopcast.privacy.apikeys import open_key_store
    from shopcast.privacy.tenants import tenant_settings
    from shopcast.storage._postgres import url_schema

    settings = Settings(
        environment="test",
        database_url=postgres_url,
        model_dir=tmp_path / "models",
        auth={"enabled": True, "keys_path": tmp_path / "keys.db"},
    )
    schemas = [url_schema(tenant_settings(settings, t).database_url) for t in ("shop-a", "shop-b")]
    keys = open_key_store(settings)  # in PostgreSQL, with a postgresql:// database
    try:
        a = {"Authorization": f"Bearer {keys.create(['admin'], tenant='shop-a')[1]}"}
        b = {"Authorization": f"Bearer {keys.create(['admin'], tenant='shop-b')[1]}"}
        with TestClient(create_app(settings)) as c:
            assert c.put("/v1/items/a-tent", json={"title": "Tent"}, headers=a).status_code == 200
            event = {"event_id": "a1", "type": "view", "user_id": "alice", "item_id": "a-tent"}
            assert c.post("/v1/events", json=[event], headers=a).status_code == 202
            assert c.get("/v1/items/a-tent", headers=a).status_code == 200
            assert c.get("/v1/items/a-tent", headers=b).status_code == 404
            assert c.get("/v1/trending", headers=b).json()["items"] == []
        for schema, events in zip(schemas, (1, 0), strict=True):
            found = sql(postgres_url, f'SELECT count(*) FROM "{schema}".events')
            assert found == [(events,)]
        assert sql(postgres_url, "SELECT count(*) FROM events") == [(0,)]  # the default's
    finally:
        keys.close()
        conninfo, _ = split_url(postgres_url)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
