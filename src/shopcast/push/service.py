"""The push engine inside the API process: one ``PushEngine`` per open tenant (each
listening to its serving engine), one ``StreamHub`` for the live streams, and the
scheduler task; with Redis state a ``push.fanout`` listener per tenant (live pushes
decided by other processes reach this process's streams at once). Also registers
the erasure hooks (``privacy.erasure``): erasing a user removes their outbox messages
and deliveries (``push_outbox``) and their decisions, feedback, timers and interest
rows (``push_history``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from shopcast.config import Settings
from shopcast.domain import Event, Item
from shopcast.push import scheduler
from shopcast.push.attribution import Attribution
from shopcast.push.engine import PushEngine, push_urls
from shopcast.push.fanout import FanoutListener
from shopcast.push.messages import LIVE
from shopcast.push.outbox import open_outbox
from shopcast.push.state import PushState
from shopcast.push.streams import StreamHub

if TYPE_CHECKING:
    import httpx

    from shopcast.api.auth import Tenant, TenantPool
    from shopcast.storage import Store

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_BY_STORE: dict[int, PushEngine] = {}  # id(store) -> the push engine over it (erasure)


class CatalogListener:
    """The engine listener of an API process when ``push.in_process`` is off: catalog
    upserts go to the push engine (they are applied here, not on the event stream);
    events are left to ``shopcast worker`` (``push.worker``)."""

    def __init__(self, push: PushEngine) -> None:
        self.push = push

    def observe(self, events: Sequence[Event]) -> None:
        return None

    def observe_items(self, items: Sequence[Item]) -> None:
        self.push.observe_items(items)


class PushService:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] | None = None,
        webhook_client: httpx.Client | None = None,
    ) -> None:
        self.settings = settings
        self.hub = StreamHub()
        self.clock = clock
        self.webhook_client = webhook_client
        self._engines: dict[str, PushEngine] = {}
        self._stores: dict[str, Store] = {}
        self._listeners: dict[str, FanoutListener] = {}  # live wake-ups per tenant (Redis)
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.push.enabled

    def attach(self, tenant: Tenant) -> PushEngine | None:
        """The tenant's push engine, opened on first use and listening to its engine."""
        if not tenant.settings.push.enabled:
            return None
        with _LOCK:
            push = self._engines.get(tenant.name)
            if push is not None:
                return push
            push = PushEngine.open(
                tenant.store,
                tenant.settings,
                tenant.engine,
                clock=self.clock,
                hub=self.hub,
                webhook_client=self.webhook_client,
            )
            # in process: every trigger; else the workers observe the event stream and
            # this process reacts to the catalog changes it applies (price drop, …)
            in_process = tenant.settings.push.in_process
            tenant.engine.listeners.append(push if in_process else CatalogListener(push))
            if push.fanout is not None:  # streams on this process, pushes decided anywhere
                self._listeners[tenant.name] = FanoutListener(push.fanout, push.wake).start()
            self._engines[tenant.name] = push
            self._stores[tenant.name] = tenant.store
            _BY_STORE[id(tenant.store)] = push
            return push

    def get(self, tenant: Tenant) -> PushEngine | None:
        return self._engines.get(tenant.name) or self.attach(tenant)

    def engines(self) -> list[PushEngine]:
        return list(self._engines.values())

    def start(self, tenants: TenantPool) -> None:
        """Attach the open tenants and start the scheduler (tenants opened later are
        attached by ``TenantPool.on_open``)."""
        if not self.enabled:
            return
        for tenant in tenants.tenants():
            self.attach(tenant)
        tenants.on_open.append(self.attach)
        in_process = self.settings.push.in_process
        self._task = asyncio.create_task(
            scheduler.run_async(
                self.engines,
                self.settings.push.tick_interval_s,
                ticks=in_process,
                channel=None if in_process else LIVE,
            )
        )

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for listener in self._listeners.values():
            listener.stop()
        self._listeners.clear()
        with _LOCK:
            for name, push in self._engines.items():
                _BY_STORE.pop(id(self._stores[name]), None)
                push.close()
            self._engines.clear()
            self._stores.clear()
        self.hub.close()


def _offline(store: Store, user_id: str, kind: str, settings: Settings) -> int:
    """Erase from the push tables where the settings put them (``push.outbox_url``, else
    beside the store's SQLite file or in its PostgreSQL database); no push engine running."""
    outbox_url, state_url = push_urls(store.url, settings.push)
    if outbox_url == "memory://":
        return 0  # nothing durable: an in-memory outbox died with its process
    if kind == "push_outbox":
        box = open_outbox(outbox_url)
        try:
            return box.delete_user(user_id)
        finally:
            box.close()
    state, journal = PushState(state_url), Attribution(state_url)
    try:
        return state.delete_user(user_id) + journal.delete_user(user_id)
    finally:
        state.close()
        journal.close()


def erase_outbox(store: Store, user_id: str, settings: Settings) -> int:
    push = _BY_STORE.get(id(store))
    if push is None:
        return _offline(store, user_id, "push_outbox", settings)
    return push.outbox.delete_user(user_id)


def erase_history(store: Store, user_id: str, settings: Settings) -> int:
    push = _BY_STORE.get(id(store))
    if push is None:
        return _offline(store, user_id, "push_history", settings)
    push.views.forget(user_id)
    return push.journal.delete_user(user_id) + push.state.delete_user(user_id)


def register_erasure() -> None:
    from shopcast.privacy.erasure import register_hook

    register_hook("push_outbox", erase_outbox)
    register_hook("push_history", erase_history)


register_erasure()
