"""A bounded, short-lived cache of API-key checks (``AuthMiddleware``: one per request).

Without it every request looked its key up in the key store: on SQLite a query
(~10 µs), on PostgreSQL a network round trip that ``AuthMiddleware`` runs on the thread
pool (a hand-off per request). ``CachedKeys`` keeps, per presented token, what
``verify`` answered (the key, or None for a token that is not valid) for
``auth.key_cache_ttl_s`` seconds, at most ``auth.key_cache_size`` tokens (the oldest
go first). Only SHA-256 digests of tokens are held, never a token.

A revoked key stops working:

- at once in this process: ``CachedKeys.revoke`` and ``revoked(key_id)`` (called by
  ``announce_revoked``) drop it from every cache of the process;
- at once everywhere with the SQLite key file: each check first reads the file's
  ``data_version`` (``KeyStore.version``, a few µs), which changes when any other
  connection or process writes to it (a new or revoked key), and then the whole
  cache is dropped;
- across processes on PostgreSQL: at once when the revoking process announces it on
  Redis (``announce_revoked``, by ``shopcast keys revoke`` with a ``redis://``
  ``state.url``; every server subscribes), and within the TTL otherwise.

Errors of the store (``StorageUnavailableError``) are never cached.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from shopcast.privacy.apikeys import ApiKey, ApiKeyStore
from shopcast.privacy.tenants import DEFAULT_TENANT

if TYPE_CHECKING:
    from shopcast.config import Settings

log = logging.getLogger(__name__)

#: Returned by ``CachedKeys.cached`` when the token has no live entry.
MISS: Any = object()

#: Every cache of this process (``revoked`` reaches them all).
_CACHES: weakref.WeakSet[CachedKeys] = weakref.WeakSet()
_CACHES_LOCK = threading.Lock()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class CachedKeys:
    """``ApiKeyStore`` with ``verify`` answers cached (see the module docstring)."""

    def __init__(
        self,
        inner: ApiKeyStore,
        *,
        ttl_s: float = 2.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[float, ApiKey | None]] = OrderedDict()
        self._lock = threading.Lock()
        version = getattr(inner, "version", None)
        self._version: Callable[[], int] | None = version if callable(version) else None
        self._seen_version: int | None = None
        self._generation = 0  # + 1 on every forget: a lookup in flight is not cached
        self.hits = 0
        self.misses = 0
        with _CACHES_LOCK:
            _CACHES.add(self)

    @property
    def exact(self) -> bool:
        """Whether every change of the store is seen at the next check (SQLite file)."""
        return self._version is not None

    def cached(self, token: str) -> Any:
        """The cached answer for ``token`` (a key or None), or ``MISS``: no I/O but the
        key file's version (SQLite), so it may run on the event loop."""
        if self.ttl_s <= 0:
            return MISS
        if self._version is not None:
            version = self._version()
            if version != self._seen_version:
                with self._lock:
                    self._entries.clear()
                    self._seen_version = version
                    self._generation += 1
                return MISS
        digest = _digest(token)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None or entry[0] <= self.clock():
                return MISS
            self.hits += 1
            return entry[1]

    def verify(self, token: str) -> ApiKey | None:
        """The live key of ``token`` (from the cache when fresh, else from the store)."""
        hit = self.cached(token)
        if hit is not MISS:
            return hit  # type: ignore[no-any-return]
        generation = self._generation
        key = self.inner.verify(token)  # raises when the store is down: nothing cached
        if self.ttl_s > 0:
            digest = _digest(token)
            with self._lock:
                self.misses += 1
                if generation == self._generation:  # nothing revoked or written meanwhile
                    self._entries[digest] = (self.clock() + self.ttl_s, key)
                    self._entries.move_to_end(digest)
                    while len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
        return key

    def forget(self, key_id: str | None = None) -> None:
        """Drop the entries of ``key_id`` (every entry when None)."""
        with self._lock:
            self._generation += 1
            if key_id is None:
                self._entries.clear()
                return
            for digest in [
                d for d, (_, key) in self._entries.items() if key and key.key_id == key_id
            ]:
                del self._entries[digest]

    def __len__(self) -> int:
        return len(self._entries)

    # --- the rest of ApiKeyStore, passed through -------------------------------------

    def create(
        self, scopes: Iterable[str], *, tenant: str = DEFAULT_TENANT, name: str = ""
    ) -> tuple[ApiKey, str]:
        return self.inner.create(scopes, tenant=tenant, name=name)

    def list(self) -> list[ApiKey]:
        return self.inner.list()

    def revoke(self, key_id: str) -> ApiKey:
        key = self.inner.revoke(key_id)
        revoked(key_id)
        return key

    def close(self) -> None:
        self.inner.close()


def revoked(key_id: str | None) -> int:
    """Drop ``key_id`` (None: everything) from every cache of this process; how many."""
    with _CACHES_LOCK:
        caches = list(_CACHES)
    for cache in caches:
        cache.forget(key_id)
    return len(caches)


def revocation_channel(settings: Settings) -> str | None:
    """The Redis pub/sub channel of revocations (None without a ``redis://`` state)."""
    from shopcast.online import is_shared

    if not is_shared(settings.state.url):
        return None
    from shopcast.online._redis import split_url

    return f"{split_url(settings.state.url)[1]}keys:revoked"


def announce_revoked(settings: Settings, key_id: str) -> bool:
    """A key was revoked: drop it from this process's caches now, and tell every other
    process through Redis (when ``state.url`` is ``redis://``). False when no other
    process could be told (no Redis, or Redis down: they see it within the TTL)."""
    revoked(key_id)
    channel = revocation_channel(settings)
    if channel is None:
        return False
    from shopcast.online import connect

    conn = connect(settings.state)
    try:
        conn.client.publish(channel, key_id)
        return True
    except Exception as exc:  # Redis down: the TTL still bounds the delay
        log.warning("could not announce the revocation of %s on Redis: %s", key_id, exc)
        return False
    finally:
        conn.close()


class RevocationListener:
    """Follows the revocation channel on Redis in a daemon thread; each message drops
    that key from this process's caches (a (re)subscription drops everything: what
    was announced while disconnected is not known)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.channel = revocation_channel(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.subscribed = threading.Event()

    def start(self) -> RevocationListener:
        if self.channel is not None and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="shopcast-key-revocations", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        from shopcast.online import connect

        assert self.channel is not None
        while not self._stop.is_set():
            conn = connect(self.settings.state)
            try:
                client = conn.blocking_client(1.0)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                revoked(None)  # anything announced before this subscription
                self.subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        data = message.get("data")
                        revoked(data.decode() if isinstance(data, bytes) else str(data))
                pubsub.close()
                client.close()
            except Exception as exc:
                self.subscribed.clear()
                log.debug("key revocation channel unavailable: %s", exc)
                self._stop.wait(1.0)
            finally:
                conn.close()
