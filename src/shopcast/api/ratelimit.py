"""Per-key rate limits: a token bucket per API key (``auth.rate_limit``).

``open_limiter`` follows ``state.url`` like the rest of the online state:

* ``memory://`` (default): ``TokenBuckets``, in this process; with ``serve --workers N``
  or several hosts each process lets a key through at the full rate.
* ``redis://``: ``RedisTokenBuckets``, one bucket per key in Redis shared by every
  process and host, updated by one Lua script (atomic: read, refill, take, write), timed
  by the Redis server's clock (hosts' clocks may differ). Keys:
  ``<prefix>[<tenant>:]ratelimit:<key id>`` (the tenant's prefix, as for its other
  online state), expiring once a full bucket would have refilled.

A limiter answers ``take(key_id, tenant)``: 0 when the request may pass, else the
seconds until it may (``Retry-After``). When Redis cannot be reached, each process
enforces the limit on its own (an in-process ``TokenBuckets``) until Redis answers
again: the shop's traffic is never refused because Redis is down, and no key gets more
than its rate per process meanwhile (with N processes, up to N times its rate). A
warning is logged; the connection's breaker skips Redis for ``state.retry_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from shopcast.errors import StateUnavailableError
from shopcast.privacy.tenants import DEFAULT_TENANT

if TYPE_CHECKING:
    from shopcast.config import Settings
    from shopcast.online._redis import RedisConnection

log = logging.getLogger(__name__)


class RateLimiter(Protocol):
    rate: float
    burst: float

    def take(self, key: str, tenant: str = DEFAULT_TENANT) -> float: ...

    def close(self) -> None: ...


class TokenBuckets:
    """One token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, tenant: str = DEFAULT_TENANT) -> float:
        """0 when a request may pass (a token is taken), else seconds until one may."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get((tenant, key), (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[(tenant, key)] = (tokens - 1.0, now)
                return 0.0
            self._buckets[(tenant, key)] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def close(self) -> None:
        pass


#: KEYS[1] the bucket; ARGV rate, burst, now (empty: the server's TIME). Returns the wait
#: as a string (Lua numbers would be truncated to integers in the reply).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(saved[1]) or burst
local at = tonumber(saved[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'at', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return string.format('%.17g', wait)
"""


class RedisTokenBuckets:
    """``TokenBuckets`` in Redis, shared by every process using the same URL and prefix.

    ``clock`` (tests) replaces the Redis server's clock."""

    def __init__(
        self,
        connection: RedisConnection,
        rate: float,
        burst: int,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.connection = connection
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._script = connection.client.register_script(_TAKE)
        self._warned_at = 0.0
        self.fallback = TokenBuckets(rate, burst)  # while Redis is unavailable

    def bucket_key(self, key: str, tenant: str = DEFAULT_TENANT) -> str:
        space = "" if tenant == DEFAULT_TENANT else f"{tenant}:"
        return f"{self.connection.prefix}{space}ratelimit:{key}"

    def take(self, key: str, tenant: str = DEFAULT_TENANT) -> float:
        now = "" if self.clock is None else repr(float(self.clock()))
        args = [repr(self.rate), repr(self.burst), now]
        try:
            wait = self.connection.call(
                lambda: self._script(keys=[self.bucket_key(key, tenant)], args=args)
            )
        except StateUnavailableError as exc:
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("rate limits per process while Redis is unavailable: %s", exc)
            return self.fallback.take(key, tenant)
        return max(0.0, float(wait))

    def close(self) -> None:
        self.connection.close()


def open_limiter(settings: Settings) -> RateLimiter | None:
    """The limiter ``auth.rate_limit`` asks for, where ``state.url`` says; None when off."""
    limit = settings.auth.rate_limit
    if not limit.enabled:
        return None
    from shopcast.online import connect, is_shared

    if is_shared(settings.state.url):
        return RedisTokenBuckets(connect(settings.state), limit.rate_per_s, limit.burst)
    return TokenBuckets(limit.rate_per_s, limit.burst)
