"""Online counters: plain counters, frequency caps, popularity and co-visitation deltas.

``Counters`` is the protocol; ``MemoryCounters`` (in process, the embedded default) and
``RedisCounters`` (shared by every process) implement it and pass the same contract
tests (``tests/online/test_contract.py``).

- ``incr`` / ``get``: named counters (e.g. the push engine's sends per campaign).
- ``take``: a frequency cap over a sliding window: atomically counts one use of ``key``
  and says True, unless ``limit`` uses already fall in the last ``window_s`` seconds.
- ``apply_event``: the online aggregates of one event, applied **once per event id**
  (a redelivered event changes nothing and returns False): the item's popularity in
  the event's UTC day, and co-visitation deltas between the item and the subject's
  ``window`` previous distinct items (both directions, the event's weight).
  In Redis the whole update is one Lua script: the event id mark and the increments
  happen together or not at all.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, defaultdict, deque
from collections.abc import Sequence
from typing import Protocol

from shopcast.online._redis import RedisConnection

SECONDS_PER_DAY = 86_400


def day_of(ts: float) -> int:
    return int(ts // SECONDS_PER_DAY)


class Counters(Protocol):
    def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        """Add ``amount``; the new value. ``ttl_s``: the counter expires that long after
        its latest change."""
        ...

    def get(self, key: str) -> int: ...

    def take(self, key: str, limit: int, window_s: float, *, now: float | None = None) -> bool:
        """Count one use of ``key`` if fewer than ``limit`` fall in the last ``window_s``."""
        ...

    def apply_event(
        self, event_id: str, subject: str, item_id: str, weight: float, ts: float
    ) -> bool:
        """The event's popularity and co-visitation deltas, once per ``event_id``."""
        ...

    def applied(self, event_id: str) -> bool: ...

    def popular(
        self, n: int, *, days: int = 1, now: float | None = None
    ) -> list[tuple[str, float]]:
        """The ``n`` items with the most weight over the last ``days`` UTC days."""
        ...

    def covisited(self, item_id: str, n: int) -> list[tuple[str, float]]:
        """The ``n`` items most co-visited with ``item_id`` (online deltas)."""
        ...


class MemoryCounters:
    """``Counters`` in process (one API process; nothing shared)."""

    def __init__(self, *, window: int = 5, dedupe_capacity: int = 1_000_000) -> None:
        self.window = window
        self._counts: dict[str, int] = defaultdict(int)
        self._uses: dict[str, deque[float]] = defaultdict(deque)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = dedupe_capacity
        self._pop: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._cov: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._recent: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        with self._lock:
            self._counts[key] += amount
            return self._counts[key]

    def get(self, key: str) -> int:
        with self._lock:
            return self._counts.get(key, 0)

    def take(self, key: str, limit: int, window_s: float, *, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            uses = self._uses[key]
            while uses and uses[0] <= now - window_s:
                uses.popleft()
            if len(uses) >= limit:
                return False
            uses.append(now)
            return True

    def apply_event(
        self, event_id: str, subject: str, item_id: str, weight: float, ts: float
    ) -> bool:
        with self._lock:
            if event_id in self._seen:
                return False
            self._seen[event_id] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            self._pop[day_of(ts)][item_id] += weight
            recent = self._recent.get(subject, [])
            for other in recent:
                if other != item_id:
                    self._cov[item_id][other] += weight
                    self._cov[other][item_id] += weight
            self._recent[subject] = [item_id, *(r for r in recent if r != item_id)][: self.window]
            return True

    def applied(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self._seen

    def popular(
        self, n: int, *, days: int = 1, now: float | None = None
    ) -> list[tuple[str, float]]:
        today = day_of(time.time() if now is None else now)
        total: dict[str, float] = defaultdict(float)
        with self._lock:
            for day in range(today - days + 1, today + 1):
                for item, w in self._pop.get(day, {}).items():
                    total[item] += w
        return _top(total.items(), n)

    def covisited(self, item_id: str, n: int) -> list[tuple[str, float]]:
        with self._lock:
            return _top(self._cov.get(item_id, {}).items(), n)


def _top(pairs: object, n: int) -> list[tuple[str, float]]:
    rows = sorted(pairs, key=lambda p: (-p[1], p[0]))  # type: ignore[call-overload]
    return [(str(k), float(v)) for k, v in rows[:n] if v > 0]


_APPLY = """
-- KEYS: seen mark, popularity bucket, subject window
-- ARGV: item, weight, window, seen ttl ms, counter ttl ms, co-visitation key prefix,
--       a counter to increment with it ('' for none)
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[4]) then return 0 end
local item, w = ARGV[1], ARGV[2]
redis.call('ZINCRBY', KEYS[2], w, item)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local recent = redis.call('LRANGE', KEYS[3], 0, tonumber(ARGV[3]) - 1)
for _, other in ipairs(recent) do
  if other ~= item then
    redis.call('ZINCRBY', ARGV[6] .. item, w, other)
    redis.call('PEXPIRE', ARGV[6] .. item, ARGV[5])
    redis.call('ZINCRBY', ARGV[6] .. other, w, item)
    redis.call('PEXPIRE', ARGV[6] .. other, ARGV[5])
  end
end
redis.call('LREM', KEYS[3], 0, item)
redis.call('LPUSH', KEYS[3], item)
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
redis.call('PEXPIRE', KEYS[3], ARGV[5])
if ARGV[7] ~= '' then redis.call('INCR', ARGV[7]) end
return 1
"""

_TAKE = """
-- KEYS: the cap's sorted set; ARGV: now, window s, limit, member
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return 1
"""


class RedisCounters:
    """``Counters`` in Redis: keys ``c:<key>``, ``cap:<key>``, ``seen:<event id>``,
    ``pop:<day>``, ``cov:<item>``, ``win:<subject>`` under the prefix.

    The co-visitation keys a script touches are computed inside it (fine on one Redis
    server or a replicated pair; Redis Cluster would need hash tags)."""

    def __init__(
        self,
        conn: RedisConnection,
        *,
        window: int = 5,
        counter_ttl_s: float = 30 * 86_400.0,
        dedupe_ttl_s: float = 7 * 86_400.0,
    ) -> None:
        self.conn = conn
        self.window = window
        self.counter_ttl_ms = int(counter_ttl_s * 1000)
        self.dedupe_ttl_ms = int(dedupe_ttl_s * 1000)
        self._apply = conn.client.register_script(_APPLY)
        self._take = conn.client.register_script(_TAKE)

    def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        name = self.conn.key("c", key)

        def run() -> int:
            pipe = self.conn.client.pipeline(transaction=True)
            pipe.incrby(name, amount)
            if ttl_s is not None:
                pipe.pexpire(name, int(ttl_s * 1000))
            return int(pipe.execute()[0])

        return self.conn.call(run)

    def get(self, key: str) -> int:
        value = self.conn.call(lambda: self.conn.client.get(self.conn.key("c", key)))
        return int(value or 0)

    def take(self, key: str, limit: int, window_s: float, *, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        name = self.conn.key("cap", key)
        member = f"{now:.6f}:{uuid.uuid4().hex[:8]}"
        return bool(
            self.conn.call(lambda: self._take(keys=[name], args=[now, window_s, limit, member]))
        )

    def _apply_args(
        self,
        event_id: str,
        subject: str,
        item_id: str,
        weight: float,
        ts: float,
        tally: str | None = None,
    ) -> tuple[list[str], list[object]]:
        keys = [
            self.conn.key("seen", event_id),
            self.conn.key("pop", str(day_of(ts))),
            self.conn.key("win", subject),
        ]
        args: list[object] = [
            item_id,
            repr(float(weight)),
            self.window,
            self.dedupe_ttl_ms,
            self.counter_ttl_ms,
            self.conn.key("cov", ""),
            self.conn.key("c", tally) if tally else "",
        ]
        return keys, args

    def apply_event(
        self, event_id: str, subject: str, item_id: str, weight: float, ts: float
    ) -> bool:
        keys, args = self._apply_args(event_id, subject, item_id, weight, ts)
        return bool(self.conn.call(lambda: self._apply(keys=keys, args=args)))

    def apply_events(
        self, rows: Sequence[tuple[str, str, str, float, float]], *, tally: str | None = None
    ) -> list[bool]:
        """``apply_event`` for many events in one pipelined round trip (in order);
        ``tally``: a counter (``get``) incremented atomically with each event applied."""
        if not rows:
            return []

        def run() -> list[bool]:
            pipe = self.conn.client.pipeline(transaction=False)
            for row in rows:
                keys, args = self._apply_args(*row, tally=tally)
                self._apply(keys=keys, args=args, client=pipe)
            return [bool(x) for x in pipe.execute()]

        return self.conn.call(run)

    def applied(self, event_id: str) -> bool:
        return bool(
            self.conn.call(lambda: self.conn.client.exists(self.conn.key("seen", event_id)))
        )

    def popular(
        self, n: int, *, days: int = 1, now: float | None = None
    ) -> list[tuple[str, float]]:
        today = day_of(time.time() if now is None else now)
        keys = [self.conn.key("pop", str(d)) for d in range(today - days + 1, today + 1)]
        rows = self.conn.call(lambda: self.conn.client.zunion(keys, withscores=True))
        return _top(rows, n)

    def covisited(self, item_id: str, n: int) -> list[tuple[str, float]]:
        key = self.conn.key("cov", item_id)
        rows = self.conn.call(lambda: self.conn.client.zrange(key, 0, -1, withscores=True))
        return _top(rows, n)
