"""Retrain requests (an erasure's) kept by the registry: a ``RETRAIN`` file in
``model_dir``, or the table ``model_retrain`` when the registry is in PostgreSQL, where
every process and host's retrainer sees them. Data here is SYNTHETIC."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from shopcast.api import create_app
from shopcast.config import Settings
from shopcast.ingest.importer import import_events
from shopcast.privacy.erasure import pending_retrain, retrained, schedule_retrain
from shopcast.privacy.retention import maintain
from shopcast.simulate import SimulatedShop
from shopcast.storage import open_store
from shopcast.storage._postgres import split_url
from shopcast.training.registry import RETRAIN_FILE, ModelRegistry, open_registry
from shopcast.training.registry_pg import PgModelRegistry

Opener = Callable[[], ModelRegistry]
OPENED: dict[str, Settings] = {}  # the settings of each test's deployment


def _settings(url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=url,
        model_dir=tmp_path / "models",
        auth={"enabled": False},
    )


@pytest.fixture(params=["files", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the registry of one deployment as another process would."""
    if request.param == "files":
        url = f"sqlite:///{tmp_path / 'shop.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    settings = _settings(url, tmp_path)
    OPENED[request.node.nodeid] = settings
    yield lambda: open_registry(settings)
    del OPENED[request.node.nodeid]


def test_requests_are_seen_by_every_registry(opener: Opener) -> None:
    one, two = opener(), opener()
    assert two.retrain_requests() == []
    schedule_retrain(one.model_dir, "erasure", registry=one)
    schedule_retrain(one.model_dir, "consent", registry=one)
    seen = pending_retrain(two.model_dir, registry=two)
    assert [r["reason"] for r in seen] == ["erasure", "consent"]
    assert seen[0]["at"] <= seen[1]["at"]


def test_a_training_serves_only_the_requests_made_before_it(opener: Opener) -> None:
    one, two = opener(), opener()
    schedule_retrain(one.model_dir, "erasure", registry=one)
    time.sleep(0.01)
    started = time.time()  # the training reads the log
    time.sleep(0.01)
    two.request_retrain("consent")  # made while it ran
    assert retrained(one.model_dir, started, prune=False, registry=one) == 1
    assert [r["reason"] for r in two.retrain_requests()] == ["consent"]
    assert retrained(two.model_dir, time.time(), prune=False, registry=two) == 1
    assert one.retrain_requests() == []


def test_two_retrainers_finishing_together_serve_each_request_once(opener: Opener) -> None:
    registries = [opener() for _ in range(4)]
    for _ in range(20):
        registries[0].request_retrain("erasure")
    started = registries[0].retrain_requests()[-1]["at"] + 1
    served: list[int] = []
    lock = threading.Lock()

    def serve(registry: ModelRegistry) -> None:
        got = len(registry.serve_retrains(started))
        with lock:
            served.append(got)

    threads = [threading.Thread(target=serve, args=(r,)) for r in registries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(served) == 20
    assert registries[1].retrain_requests() == []


def test_on_postgresql_the_requests_are_rows_not_a_file(postgres_url: str, tmp_path: Path) -> None:
    registry = open_registry(_settings(postgres_url, tmp_path))
    assert isinstance(registry, PgModelRegistry)
    registry.request_retrain("erasure")
    assert not (tmp_path / "models" / RETRAIN_FILE).exists()
    with psycopg.connect(split_url(postgres_url)[0]) as conn:
        rows = conn.execute("SELECT reason FROM model_retrain").fetchall()
    assert rows == [("erasure",)]
    assert ModelRegistry(tmp_path / "models").retrain_requests() == []  # not in the dir


def test_an_erasure_on_one_process_is_retrained_by_another(
    postgres_url: str, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    """Process A erases a user (DELETE /v1/users/{id}); process B's privacy maintenance
    (another API process or host on the same database) sees the request and retrains."""
    settings = _settings(postgres_url, tmp_path)
    store = open_store(postgres_url)
    try:
        store.items.upsert(small_shop.items)
        store.users.upsert(small_shop.users)
        import_events(store, small_shop.events)
        user = small_shop.users[0].user_id
        with TestClient(create_app(settings)) as a:
            r = a.delete(f"/v1/users/{user}")
            assert r.status_code == 200, r.text
            assert r.json()["retrain_scheduled"] is True
        assert not (settings.model_dir / RETRAIN_FILE).exists()
        other = open_registry(settings)  # process B
        assert [x["reason"] for x in pending_retrain(settings.model_dir, registry=other)] == [
            "erasure"
        ]
        done = maintain(store, settings)  # B's maintenance pass
        assert done["retrained"] is not None
        assert other.current() == done["retrained"]
        assert open_registry(settings).retrain_requests() == []
        assert maintain(store, settings)["retrained"] is None  # nothing left to do
        bundle_users = store.events.scan(subject=f"u:{user}")
        assert bundle_users == []
    finally:
        store.close()


def test_one_retrainer_at_a_time(opener: Opener, request: pytest.FixtureRequest) -> None:
    """While one process trains for the pending requests, another's maintenance does not
    start a second training for them; afterwards it may."""
    settings = OPENED[request.node.nodeid]
    one, two = opener(), opener()
    schedule_retrain(settings.model_dir, "erasure", registry=two)
    store = open_store(settings.database_url)  # an empty shop: nothing to train on
    try:
        with one.retrain_turn() as first:
            assert first is True
            with two.retrain_turn() as second:
                assert second is False
            assert maintain(store, settings)["retrained"] is None  # not its turn
            assert [r["reason"] for r in two.retrain_requests()] == ["erasure"]  # kept
        with two.retrain_turn() as later:
            assert later is True
    finally:
        store.close()
