"""``shopcast worker`` follows every tenant's stream, against real Redis (SYNTHETIC events).

Two tenants' events (plus the default tenant's) land in their own tenant's online state
exactly once, with two worker sets sharing the load and a third tenant created while they
run; the CLI form consumes every tenant too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shopcast.config import Settings
from shopcast.domain import Event
from shopcast.errors import ConfigError
from shopcast.online import OnlineState, open_online
from shopcast.online.tenants import known_tenants, register
from shopcast.online.worker import TenantWorkers
from shopcast.privacy.apikeys import KeyStore
from shopcast.privacy.tenants import tenant_settings

from .test_worker import DAY, expected_popularity, wait_for


def tenant_events(tag: str, n: int, items: int) -> list[Event]:
    """``n`` events of ``items`` items whose ids carry the tenant's tag."""
    return [
        Event(
            event_id=f"{tag}-{i}",
            type="purchase" if i % 5 == 0 else "view",
            user_id=f"u{i % 9}",
            item_id=f"{tag}-i{(i * 7) % items}",
            timestamp=DAY + i,
        )
        for i in range(n)
    ]


def settings_with(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
        state={"url": redis_url},
        auth={"keys_path": tmp_path / "keys.db"},
    )


def state_of(settings: Settings, tenant: str) -> OnlineState:
    return open_online(tenant_settings(settings, tenant).state, lambda _s, _n: [], length=5)


def drained(state: OnlineState) -> bool:
    assert state.bus is not None
    return state.bus.backlog() == {"pending": 0, "lag": 0}


def test_workers_consume_every_tenant_exactly_once(redis_url: str, tmp_path: Path) -> None:
    settings = settings_with(redis_url, tmp_path)
    keys = KeyStore(settings.auth.keys_path)
    keys.create(["read"], tenant="acme")  # a tenant with an API key
    keys.close()
    register(settings, "zeta")  # opened by an API process
    assert known_tenants(settings) == ["default", "acme", "zeta"]
    published = {
        "default": tenant_events("d", 120, 11),
        "acme": tenant_events("a", 200, 13),
        "zeta": tenant_events("z", 150, 7),
    }
    states = {t: state_of(settings, t) for t in ("default", "acme", "zeta", "late")}
    for tenant, evs in published.items():
        bus = states[tenant].bus
        assert bus is not None
        bus.publish(evs, "test")
        bus.publish(evs[:30], "test")  # republished after an outage: applied once
    stop = threading.Event()
    sets = [
        TenantWorkers(
            settings, discover_every_s=0.2, name=f"w{i}", batch=16, throttle_s=0.002
        )  # 2 ms per event: neither set drains a stream before the other starts
        for i in range(2)
    ]
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in sets]
    for thread in threads:
        thread.start()
    try:
        for tenant in published:
            wait_for(lambda t=tenant: drained(states[t]), 60, f"tenant {tenant} drained")
        # a tenant created while the workers run: its earlier events are consumed too
        late = tenant_events("l", 80, 5)
        assert states["late"].bus is not None
        states["late"].bus.publish(late[:40], "test")
        register(settings, "late")
        states["late"].bus.publish(late[40:], "test")
        published["late"] = late
        wait_for(lambda: all("late" in w.stats() for w in sets), 30, "the late tenant found")
        wait_for(lambda: drained(states["late"]), 60, "tenant late drained")
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    for tenant, evs in published.items():
        got = dict(states[tenant].counters.popular(1000, now=DAY))
        assert got == expected_popularity(evs), tenant  # its own events, each once
        stats = [w.stats()[tenant] for w in sets]
        assert sum(s.applied for s in stats) == len(evs)
        republished = 30 if tenant != "late" else 0
        assert sum(s.duplicates for s in stats) == republished
    # both worker sets took a share of the busiest tenant's stream
    assert all(w.stats()["acme"].messages > 0 for w in sets)
    for state in states.values():
        state.close()


def test_worker_needs_shared_state_and_valid_tenants(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="shared online state"):
        TenantWorkers(Settings(environment="test", database_url="memory://"))
    with pytest.raises(ConfigError, match="tenant"):
        TenantWorkers(
            Settings(environment="test", state={"url": "redis://127.0.0.1:1/0"}),
            tenants=["Bad Name"],
        )


def test_cli_worker_consumes_every_tenant(redis_url: str, tmp_path: Path) -> None:
    settings = settings_with(redis_url, tmp_path)
    keys = KeyStore(settings.auth.keys_path)
    keys.create(["read"], tenant="acme")
    keys.close()
    published = {"default": tenant_events("d", 40, 5), "acme": tenant_events("a", 60, 6)}
    states = {t: state_of(settings, t) for t in published}
    for tenant, evs in published.items():
        assert states[tenant].bus is not None
        states[tenant].bus.publish(evs, "test")
    env = {
        **os.environ,
        "SHOPCAST_STATE__URL": redis_url,
        "SHOPCAST_DATABASE_URL": settings.database_url,
        "SHOPCAST_AUTH__KEYS_PATH": str(settings.auth.keys_path),
        "OPENBLAS_NUM_THREADS": "1",
    }
    log = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shopcast.cli", "worker", "--discover-every", "0.2"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        for tenant in published:
            wait_for(lambda t=tenant: drained(states[t]), 90, f"tenant {tenant} drained")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    out = log.read_text()
    assert "worker acme: 60 messages, 60 applied" in " ".join(out.split()), out
    for tenant, evs in published.items():
        assert dict(states[tenant].counters.popular(1000, now=DAY)) == expected_popularity(evs)
        states[tenant].close()


def test_registry_reads_the_postgresql_key_store(postgres_url: str, redis_url: str) -> None:
    from shopcast.online.tenants import TenantRegistry
    from shopcast.privacy._apikeys_pg import PgKeyStore

    settings = Settings(environment="test", database_url=postgres_url, state={"url": redis_url})
    keys = PgKeyStore(postgres_url)
    keys.create(["read"], tenant="pgshop")
    keys.close()
    registry = TenantRegistry(settings)
    try:
        assert registry.tenants() == ["default", "pgshop"]
        register(settings, "opened")
        assert registry.tenants() == ["default", "opened", "pgshop"]  # the same store, reused
    finally:
        registry.close()


def test_a_worker_whose_handler_fails_is_restarted(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shopcast.online.worker as worker_mod

    calls = {"n": 0}

    def flaky(_events: list[Event]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a push handler bug")

    monkeypatch.setattr(worker_mod, "push_handlers", lambda _settings: [flaky])
    settings = settings_with(redis_url, tmp_path)
    state = state_of(settings, "default")
    assert state.bus is not None
    evs = tenant_events("d", 60, 7)
    state.bus.publish(evs, "test")
    stop = threading.Event()
    workers = TenantWorkers(
        settings, discover_every_s=0.2, name="w", batch=16, claim_idle_ms=200, claim_every_s=0.2
    )
    thread = threading.Thread(target=workers.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: drained(state), 60, "the stream drained after the restart")
    finally:
        stop.set()
        thread.join(15)
    assert calls["n"] > 1  # the first batch failed, the restarted worker went on
    stats = workers.stats()["default"]
    assert stats.claimed == 16  # the failed batch, taken back from its pending list
    assert dict(state.counters.popular(1000, now=DAY)) == expected_popularity(evs)
    state.close()
