"""The cache of API-key checks (``shopcast.api.keycache``): hits skip the store, a
revoked key stops working (at once in the process, on the SQLite file, on a Redis
announcement; within the TTL otherwise), bounded, hashed tokens only."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shopcast.api.auth import AuthMiddleware
from shopcast.api.keycache import CachedKeys, RevocationListener, announce_revoked, revoked
from shopcast.config import Settings
from shopcast.errors import StorageUnavailableError
from shopcast.privacy.apikeys import ApiKey, KeyStore


class Remote:
    """A key store without ``version`` (like PostgreSQL's): counts lookups, may be down."""

    def __init__(self, inner: KeyStore) -> None:
        self.inner = inner
        self.lookups = 0
        self.down = False

    def create(
        self, scopes: Iterable[str], *, tenant: str = "default", name: str = ""
    ) -> tuple[ApiKey, str]:
        return self.inner.create(scopes, tenant=tenant, name=name)

    def verify(self, token: str) -> ApiKey | None:
        self.lookups += 1
        if self.down:
            raise StorageUnavailableError("key store down", 1.0)
        return self.inner.verify(token)

    def list(self) -> list[ApiKey]:
        return self.inner.list()

    def revoke(self, key_id: str) -> ApiKey:
        return self.inner.revoke(key_id)

    def close(self) -> None:
        self.inner.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def file(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


def test_hits_skip_the_store_and_expire_after_the_ttl(file: Path) -> None:
    remote, clock = Remote(KeyStore(file)), Clock()
    cache = CachedKeys(remote, ttl_s=2.0, clock=clock)
    key, token = remote.create(["read"])
    assert cache.verify(token) == key and remote.lookups == 1
    for _ in range(5):
        assert cache.verify(token) == key
    assert remote.lookups == 1 and cache.hits == 5
    # revoked by another process (another connection, no announcement): the cache may
    # answer the old key until its entry expires, never after
    other = KeyStore(file)
    other.revoke(key.key_id)
    other.close()
    clock.now += 1.9
    assert cache.verify(token) == key  # within the TTL
    clock.now += 0.2
    assert cache.verify(token) is None and remote.lookups == 2  # expired: asked again
    assert cache.verify(token) is None and remote.lookups == 2  # a refusal is cached too
    cache.close()


def test_a_revocation_in_this_process_counts_at_once(file: Path) -> None:
    remote, clock = Remote(KeyStore(file)), Clock()
    one = CachedKeys(remote, ttl_s=60.0, clock=clock)
    two = CachedKeys(Remote(KeyStore(file)), ttl_s=60.0, clock=clock)
    key, token = remote.create(["read"])
    other_key, other_token = remote.create(["read"])
    assert one.verify(token) == key and two.verify(token) == key
    assert one.verify(other_token) == other_key
    one.revoke(key.key_id)  # through a cache: every cache of the process forgets it
    assert one.verify(token) is None and two.verify(token) is None
    assert one.verify(other_token) == other_key and remote.lookups == 3  # others kept
    one.close()
    two.close()


def test_the_sqlite_key_file_is_exact_without_a_ttl(file: Path) -> None:
    """KeyStore.version (data_version): another connection's revocation is seen at once."""
    store = KeyStore(file)
    cache = CachedKeys(store, ttl_s=60.0)
    assert cache.exact
    key, token = store.create(["read"])
    assert cache.verify(token) == key and cache.verify(token) == key and cache.hits == 1
    other = KeyStore(file)
    other.revoke(key.key_id)
    other.close()
    assert cache.verify(token) is None
    cache.close()


def test_bounded_and_only_hashes_are_kept(file: Path) -> None:
    store = KeyStore(file)
    cache = CachedKeys(store, ttl_s=60.0, max_entries=3)
    tokens = [store.create(["read"])[1] for _ in range(5)]
    for token in tokens:
        assert cache.verify(token) is not None
    assert len(cache) == 3
    held = list(cache._entries)
    assert all(isinstance(d, bytes) and len(d) == 32 for d in held)
    assert not any(t.encode() in d or t in repr(cache._entries) for t in tokens for d in held)
    cache.close()


def test_errors_are_not_cached_and_ttl_zero_turns_it_off(file: Path) -> None:
    remote = Remote(KeyStore(file))
    cache = CachedKeys(remote, ttl_s=60.0)
    key, token = remote.create(["read"])
    remote.down = True
    with pytest.raises(StorageUnavailableError):
        cache.verify(token)
    remote.down = False
    assert cache.verify(token) == key
    off = CachedKeys(remote, ttl_s=0)
    lookups = remote.lookups
    off.verify(token)
    off.verify(token)
    assert remote.lookups == lookups + 2
    cache.close()


def _app(settings: Settings, keys: Remote) -> TestClient:
    def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/v1/trending", ok)])
    app.add_middleware(AuthMiddleware, settings=settings, keys=keys)
    return TestClient(app)


def test_the_middleware_checks_a_key_once_per_ttl_and_refuses_it_once_revoked(
    tmp_path: Path, file: Path
) -> None:
    settings = Settings(environment="test", auth={"enabled": True, "keys_path": file})
    remote = Remote(KeyStore(file))
    key, token = remote.create(["read"])
    client = _app(settings, remote)
    headers = {"X-API-Key": token}
    for _ in range(10):
        assert client.get("/v1/trending", headers=headers).status_code == 200
    assert remote.lookups == 1
    remote.revoke(key.key_id)
    announce_revoked(settings, key.key_id)  # what `shopcast keys revoke` does
    r = client.get("/v1/trending", headers=headers)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    # the store down while the key is not cached: 503, and that is not cached either
    fresh = remote.create(["read"])[1]
    remote.down = True
    assert client.get("/v1/trending", headers={"X-API-Key": fresh}).status_code == 503
    remote.down = False
    assert client.get("/v1/trending", headers={"X-API-Key": fresh}).status_code == 200


def test_a_revocation_announced_on_redis_reaches_another_process(
    redis_url: str, file: Path
) -> None:
    """Another process's announcement (a message on the channel) drops the key here."""
    import redis

    settings = Settings(environment="test", state={"url": redis_url})
    listener = RevocationListener(settings).start()
    try:
        assert listener.subscribed.wait(10)
        remote = Remote(KeyStore(file))
        cache = CachedKeys(remote, ttl_s=60.0)
        key, token = remote.create(["read"])
        assert cache.verify(token) == key
        remote.revoke(key.key_id)
        assert cache.verify(token) == key  # not told yet: the TTL is a minute
        assert listener.channel is not None
        client = redis.Redis.from_url(redis_url.split("?")[0])
        client.publish(listener.channel, key.key_id)  # as `keys revoke` elsewhere does
        client.close()
        deadline = time.monotonic() + 5
        while cache.verify(token) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cache.verify(token) is None
        cache.close()
    finally:
        listener.stop()
    assert revoked(None) >= 0
