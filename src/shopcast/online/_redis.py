"""The Redis connection shared by the Redis backends: URL + key prefix, circuit breaker.

A URL is ``redis://HOST:PORT/DB`` with an optional ``?prefix=P`` (default ``shopcast:``):
every key Shopcast writes starts with the prefix, so several deployments (or tests)
can share one server. After a failure, calls skip Redis for ``retry_s`` (they raise
``StateUnavailableError`` at once) instead of each waiting for a timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from shopcast.errors import ConfigError, MissingDependencyError, StateUnavailableError

T = TypeVar("T")

DEFAULT_PREFIX = "shopcast:"


def split_url(url: str) -> tuple[str, str]:
    """``(url without prefix, prefix)``."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    rest = []
    for key, value in query:
        if key == "prefix":
            prefix = value
        else:
            rest.append((key, value))
    if not prefix or any(c.isspace() for c in prefix):
        raise ConfigError(f"state.url: prefix {prefix!r} must be non-empty, without spaces")
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix


def with_namespace(url: str, namespace: str) -> str:
    """The same URL with ``namespace:`` appended to its prefix (tenants)."""
    if not url.lower().startswith(("redis", "unix")):
        return url
    base, prefix = split_url(url)
    parts = urlsplit(base)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("prefix", f"{prefix}{namespace}:")]
    return urlunsplit(parts._replace(query=urlencode(query)))


class RedisConnection:
    """A client (connection pool, text replies) plus the prefix and the breaker."""

    def __init__(self, url: str, *, timeout_s: float = 0.25, retry_s: float = 1.0) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - the scale extra installs it
            raise MissingDependencyError("redis", "scale") from exc
        base, self.prefix = split_url(url)
        self.url = url
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._errors: tuple[type[BaseException], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
            OSError,
        )
        self.client: Any = redis.Redis.from_url(
            base,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
        self._base = base
        self._down_until = 0.0
        self._lock = threading.Lock()

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def blocking_client(self, block_s: float) -> Any:
        """A separate client whose reads may block ``block_s`` (XREAD BLOCK, pub/sub)."""
        import redis

        return redis.Redis.from_url(
            self._base,
            decode_responses=True,
            socket_timeout=block_s + max(1.0, self.timeout_s),
            socket_connect_timeout=self.timeout_s,
        )

    @property
    def available(self) -> bool:
        """False while the breaker is open (a call failed less than ``retry_s`` ago)."""
        return time.monotonic() >= self._down_until

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (Redis commands); connection failures become StateUnavailableError."""
        if not self.available:
            raise StateUnavailableError(f"Redis at {self._base} is unavailable (retrying)")
        try:
            return fn()
        except self._errors as exc:
            with self._lock:
                self._down_until = time.monotonic() + self.retry_s
            raise StateUnavailableError(f"Redis at {self._base} is unavailable: {exc}") from None

    def ping(self) -> bool:
        try:
            return bool(self.call(self.client.ping))
        except StateUnavailableError:
            return False

    def close(self) -> None:
        self.client.close()
