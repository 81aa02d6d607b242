"""``shopcast worker``: consumes the event stream in a consumer group.

Each worker reads batches of new messages (``XREADGROUP``), applies them, then
acknowledges them (``XACK``): delivery is at least once. Applying is idempotent:

- the online aggregates (popularity and co-visitation deltas, ``Counters.apply_event``)
  are one Lua script per event that marks the event id and increments together, so a
  redelivered event changes nothing;
- handlers (the push engine's triggers, when ``shopcast.push`` provides
  ``worker_handler``) get every event at least once and deduplicate by event id.

Every ``claim_every_s`` a worker also takes over messages another consumer left
pending for longer than ``claim_idle_ms`` (``XAUTOCLAIM``): a worker killed mid-batch
loses nothing, its batch is finished by another. Several workers share the load.

Tenants: each tenant has its own stream, consumer group and online state (its key
prefix). ``TenantWorkers`` (what ``shopcast worker`` runs) keeps one ``Worker`` per
tenant of the registry (``online.tenants.known_tenants``), each on its own thread, and
looks for new tenants every ``discover_every_s``: a tenant created while the workers run
is consumed from the start of its stream.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shopcast.config import Settings
from shopcast.domain import Event
from shopcast.errors import ConfigError, StateUnavailableError
from shopcast.online import OnlineState, RedisCounters, open_online
from shopcast.online.bus import DEFAULT_GROUP, Message
from shopcast.privacy.tenants import DEFAULT_TENANT, tenant_settings

if TYPE_CHECKING:
    from shopcast.online.tenants import TenantRegistry

log = logging.getLogger(__name__)

Handler = Callable[[list[Event]], None]

NEEDS_REDIS = (
    "shopcast worker needs the shared online state: set [state] url = "
    '"redis://HOST:PORT/DB" (SHOPCAST_STATE__URL)'
)


@dataclass
class WorkerStats:
    messages: int = 0  # processed (acknowledged), redeliveries included
    applied: int = 0  # events whose aggregates were applied by this worker
    duplicates: int = 0  # redelivered events already applied (by anyone)
    claimed: int = 0  # messages taken over from another consumer


class Worker:
    def __init__(
        self,
        state: OnlineState,
        settings: Settings,
        *,
        name: str | None = None,
        group: str = DEFAULT_GROUP,
        batch: int = 100,
        claim_idle_ms: int = 30_000,
        claim_every_s: float = 5.0,
        handlers: Sequence[Handler] = (),
        throttle_s: float = 0.0,
    ) -> None:
        if state.bus is None or not isinstance(state.counters, RedisCounters):
            raise ConfigError(NEEDS_REDIS)
        self.state = state
        self.bus = state.bus
        self.counters: RedisCounters = state.counters
        self.weights = settings.recommend.event_weights
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.group = group
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.claim_every_s = claim_every_s
        self.handlers = list(handlers)
        self.throttle_s = throttle_s
        self.stats = WorkerStats()
        self._next_claim = 0.0

    def process(self, messages: list[Message]) -> None:
        """Apply a batch, then acknowledge it."""
        if not messages:
            return
        rows = []
        for m in messages:
            e = m.event
            weight = self.weights.get(e.type.value, 0.0)
            if e.item_id is not None and e.event_id is not None and weight > 0:
                rows.append((e.event_id, e.subject, e.item_id, weight, e.timestamp))
        fresh = self.counters.apply_events(rows, tally=f"worker:{self.name}:applied")
        new = sum(fresh)
        events = [m.event for m in messages]
        for handler in self.handlers:
            handler(events)
        if self.throttle_s:
            time.sleep(self.throttle_s * len(messages))
        self.bus.ack(self.group, [m.id for m in messages])
        self.stats.messages += len(messages)
        self.stats.applied += new
        self.stats.duplicates += len(rows) - new

    def step(self, client: object, block_ms: int = 1000) -> int:
        """Claim stale pending messages when due, then read and process new ones."""
        done = 0
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self.claim_every_s
            claimed = self.bus.claim(
                self.group, self.name, min_idle_ms=self.claim_idle_ms, count=self.batch
            )
            if claimed:
                log.info("%s claimed %d pending messages", self.name, len(claimed))
                self.stats.claimed += len(claimed)
                self.process(claimed)
                done += len(claimed)
        messages = self.state.conn.call(  # type: ignore[union-attr]
            lambda: self.bus.read(
                client, self.group, self.name, count=self.batch, block_ms=block_ms
            )
        )
        self.process(messages)
        return done + len(messages)

    def run(
        self, stop: threading.Event | None = None, *, idle_exit_s: float | None = None
    ) -> WorkerStats:
        """Until ``stop`` is set (or nothing came for ``idle_exit_s``)."""
        import redis

        stop = stop or threading.Event()
        conn = self.state.conn
        assert conn is not None
        client = conn.blocking_client(1.0)
        ready = False
        idle_since = time.monotonic()
        while not stop.is_set():
            try:
                if not ready:
                    self.bus.ensure_group(self.group)
                    ready = True
                if self.step(client):
                    idle_since = time.monotonic()
                elif idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    break
            except StateUnavailableError as exc:
                log.warning("%s: %s", self.name, exc.message)
                ready = False
                stop.wait(conn.retry_s)
            except redis.ResponseError as exc:  # NOGROUP: Redis restarted empty
                log.warning("%s: %s; recreating the group", self.name, exc)
                ready = False
                stop.wait(conn.retry_s)
        client.close()
        return self.stats


def push_handlers(settings: Settings) -> list[Handler]:
    """The push engine's trigger entry point, when ``shopcast.push`` provides one."""
    try:
        from shopcast import push
    except ImportError:  # pragma: no cover
        return []
    factory = getattr(push, "worker_handler", None)
    if factory is None:
        return []
    handler = factory(settings)
    return [handler] if handler is not None else []


def open_worker(settings: Settings, tenant: str = DEFAULT_TENANT, **options: object) -> Worker:
    """A worker of one tenant's stream (``settings``: the deployment's)."""
    own = tenant_settings(settings, tenant)
    state = open_online(own.state, lambda _s, _n: [], length=1)
    return Worker(state, own, handlers=push_handlers(own), **options)  # type: ignore[arg-type]


class TenantWorkers:
    """One ``Worker`` per tenant, each on its own thread (``run``); new tenants are
    looked for every ``discover_every_s``. ``tenants``: only these (None: every tenant
    of the registry). ``options`` go to each ``Worker``."""

    def __init__(
        self,
        settings: Settings,
        *,
        tenants: Sequence[str] | None = None,
        discover_every_s: float = 5.0,
        **options: object,
    ) -> None:
        from shopcast.online import is_shared

        if not is_shared(settings.state.url):
            raise ConfigError(NEEDS_REDIS)
        if tenants is not None:
            tenants = list(dict.fromkeys(tenants))
            for tenant in tenants:
                tenant_settings(settings, tenant)  # a bad name fails here (ConfigError)
        self.settings = settings
        self.only = tenants
        self.discover_every_s = discover_every_s
        self.options = options
        self.workers: dict[str, Worker] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._registry: TenantRegistry | None = None

    def discover(self, stop: threading.Event) -> list[str]:
        """Start a worker for each tenant not served yet, or whose worker thread died (a
        handler raised: logged, then restarted here, its statistics kept); the tenants
        started."""
        if self.only is not None:
            wanted = self.only
        else:
            if self._registry is None:
                from shopcast.online.tenants import TenantRegistry

                self._registry = TenantRegistry(self.settings)
            wanted = self._registry.tenants()
        started = []
        with self._lock:
            for tenant in wanted:
                running = self._threads.get(tenant)
                if (running is not None and running.is_alive()) or stop.is_set():
                    continue
                worker = open_worker(self.settings, tenant, **self.options)
                if tenant in self.workers:  # restarted
                    worker.stats = self.workers[tenant].stats
                thread = threading.Thread(
                    target=self._serve,
                    args=(worker, stop),
                    name=f"shopcast-worker-{tenant}",
                    daemon=True,
                )
                self.workers[tenant] = worker
                self._threads[tenant] = thread
                thread.start()
                started.append(tenant)
        for tenant in started:
            log.info("consuming the events of tenant %s", tenant)
        return started

    @staticmethod
    def _serve(worker: Worker, stop: threading.Event) -> None:
        try:
            worker.run(stop)
        except Exception:  # a handler failed: the next discovery restarts the worker
            log.exception("worker %s of %s stopped", worker.name, worker.bus.stream)
        finally:
            worker.state.close()

    def run(self, stop: threading.Event) -> dict[str, WorkerStats]:
        """Until ``stop`` is set; each tenant's statistics."""
        while not stop.is_set():
            try:
                self.discover(stop)
            except StateUnavailableError as exc:  # Redis down: the workers wait too
                log.warning("tenant discovery: %s", exc.message)
            stop.wait(self.discover_every_s)
        for thread in self._threads.values():
            thread.join(timeout=10)
        if self._registry is not None:
            self._registry.close()
            self._registry = None
        return self.stats()

    def stats(self) -> dict[str, WorkerStats]:
        with self._lock:
            return {tenant: worker.stats for tenant, worker in self.workers.items()}
