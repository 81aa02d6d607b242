"""Per-key rate limits on every backend (``TokenBuckets`` in memory, ``RedisTokenBuckets``),
and a limit shared by two API processes through Redis."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from shopcast.api import create_app
from shopcast.api.ratelimit import RateLimiter, RedisTokenBuckets, TokenBuckets, open_limiter
from shopcast.config import Settings
from shopcast.online import connect
from shopcast.online._redis import split_url
from shopcast.privacy.apikeys import KeyStore

Make = Callable[..., RateLimiter]


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    """``make(rate, burst, clock=None)``: limiters of one backend sharing their buckets
    (Redis: the same URL and prefix; memory: one object, as in one process)."""
    made: list[RateLimiter] = []
    shared: dict[tuple[float, int], TokenBuckets] = {}
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None

    def one(rate: float, burst: int, clock: Callable[[], float] | None = None) -> RateLimiter:
        limiter: RateLimiter
        if url is None:
            key = (rate, burst)
            if key not in shared:
                shared[key] = TokenBuckets(rate, burst, *([clock] if clock else []))
            limiter = shared[key]
        else:
            state = Settings(environment="test", state={"url": url}).state
            limiter = RedisTokenBuckets(connect(state), rate, burst, clock)
        made.append(limiter)
        return limiter

    yield one
    for limiter in made:
        limiter.close()


def test_burst_then_refill_at_the_rate(make: Make) -> None:
    now = [1000.0]
    buckets = make(2.0, 2, lambda: now[0])
    assert [buckets.take("k") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert buckets.take("k") == 0.0
    assert buckets.take("k") == pytest.approx(0.5)
    now[0] += 100.0
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]  # <= burst


def test_keys_and_tenants_have_their_own_buckets(make: Make) -> None:
    now = [50.0]
    buckets = make(0.001, 1, lambda: now[0])
    assert buckets.take("k1") == 0.0
    assert buckets.take("k1") > 0
    assert buckets.take("k2") == 0.0
    assert buckets.take("k1", "shop-b") == 0.0  # same key id, another tenant
    assert buckets.take("k1", "shop-b") > 0


def test_the_server_clock_limits_without_a_clock(make: Make) -> None:
    buckets = make(0.01, 3)
    waits = [buckets.take("k") for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 0 < waits[3] <= 100.0


def test_concurrent_takes_never_exceed_the_burst(make: Make) -> None:
    """Many threads (each a process, on Redis: its own connection) take at once."""
    limiters = [make(0.0001, 25) for _ in range(4)]
    passed: list[int] = []
    lock = threading.Lock()

    def worker(limiter: RateLimiter) -> None:
        mine = sum(limiter.take("hot") == 0.0 for _ in range(20))
        with lock:
            passed.append(mine)

    threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(passed) == 25  # 160 tries, exactly the burst passes


def test_redis_keys_sit_under_the_tenants_prefix(redis_url: str) -> None:
    state = Settings(environment="test", state={"url": redis_url}).state
    buckets = RedisTokenBuckets(connect(state), 1.0, 5)
    try:
        buckets.take("abc")
        buckets.take("abc", "shop-b")
        base, prefix = split_url(redis_url)
        client = redis.Redis.from_url(base, decode_responses=True)
        found = sorted(client.scan_iter(match=f"{prefix}*"))
        assert found == [f"{prefix}ratelimit:abc", f"{prefix}shop-b:ratelimit:abc"]
        ttl = client.pttl(found[0])
        assert 0 < ttl <= 6000  # gone once a full bucket would have refilled (5 s) + 1 s
        client.close()
    finally:
        buckets.close()


def test_a_redis_outage_limits_per_process() -> None:
    state = Settings(
        environment="test", state={"url": "redis://127.0.0.1:1/0", "timeout_s": 0.05}
    ).state
    buckets = RedisTokenBuckets(connect(state), 0.001, 2)
    waits = [buckets.take("k") for _ in range(3)]
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0  # the burst passes, then the limit holds
    assert buckets.take("other") == 0.0  # per key, as in Redis
    buckets.close()


def test_open_limiter_follows_state_url(redis_url: str) -> None:
    memory = open_limiter(Settings(environment="test"))
    assert isinstance(memory, TokenBuckets)
    shared = open_limiter(Settings(environment="test", state={"url": redis_url}))
    assert isinstance(shared, RedisTokenBuckets)
    shared.close()
    off = Settings(environment="test", auth={"rate_limit": {"enabled": False}})
    assert open_limiter(off) is None


def _secure(tmp_path: Path, state_url: str) -> Settings:
    return Settings(
        environment="test",
        database_url="memory://",
        model_dir=tmp_path / "models",
        state={"url": state_url},
        auth={
            "enabled": True,
            "keys_path": tmp_path / "keys.db",
            "rate_limit": {"rate_per_s": 0.001, "burst": 4},
        },
    )


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
def test_two_api_processes_share_one_limit_through_redis(
    tmp_path: Path, redis_url: str, shared: bool
) -> None:
    """Two app instances, one key: with Redis the burst is the deployment's (4 in all);
    in memory each process has its own (4 each)."""
    settings = _secure(tmp_path, redis_url if shared else "memory://")
    keys = KeyStore(settings.auth.keys_path)
    key, token = keys.create(["read"])
    headers = {"X-API-Key": token}
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        codes = [c.get("/v1/trending", headers=headers).status_code for c in (a, b) * 4]
        if not shared:
            assert codes == [200] * 8
            return
        assert codes == [200] * 4 + [429] * 4
        r = b.get("/v1/trending", headers=headers)
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        body = r.json()
        assert body["error"] == "rate_limited" and body["retry_after"] > 0
        assert body["limit"] == {
            "name": "auth.rate_limit",
            "per": "api_key",
            "key_id": key.key_id,
            "rate_per_s": 0.001,
            "burst": 4,
        }
        assert "auth.rate_limit" in body["message"]
    keys.close()
