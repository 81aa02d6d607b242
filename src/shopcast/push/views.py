"""Recent views per user for the view-counting triggers (session nudge, browse
abandonment), shared by every process when ``state.url`` is ``redis://``.

``triggers.ViewTracker`` keeps them in the process's memory: right for one process,
wrong when a shopper's events are observed by several (API processes behind a load
balancer, or ``shopcast worker`` processes sharing a consumer group). ``RedisViews``
keeps them in Redis under the tenant's prefix: ``<prefix>push:views:<user>`` is a list
of ``[ts, item, category]`` (newest last, at most ``per_user``, expiring ``ttl_s``
after the last view), appended by one Lua script that first marks the event id
(``<prefix>push:viewed:<event id>``, same expiry), so an event observed twice (a
redelivered stream message) counts once. Redis unavailable: the process's own
``ViewTracker`` answers meanwhile (degraded to per process, as without Redis).
"""

from __future__ import annotations

import json
import logging

from shopcast.errors import StateUnavailableError
from shopcast.online._redis import RedisConnection
from shopcast.push.triggers import ViewTracker

log = logging.getLogger(__name__)

_ADD = """
if ARGV[1] ~= '' then
  if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) == false then return 0 end
end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

View = tuple[float, str, str | None]


class RedisViews(ViewTracker):
    """``ViewTracker`` in Redis; the inherited in-process tracker is the fallback."""

    def __init__(self, conn: RedisConnection, *, ttl_s: float, per_user: int = 64) -> None:
        super().__init__(per_user=per_user)
        self.conn = conn
        self.ttl_s = max(1, int(ttl_s))
        self._add = conn.client.register_script(_ADD)

    def _key(self, user_id: str) -> str:
        return self.conn.key("push", "views", user_id)

    def add(
        self,
        user_id: str,
        ts: float,
        item_id: str,
        category: str | None,
        event_id: str | None = None,
    ) -> None:
        """Record a view (once per event id)."""
        super().add(user_id, ts, item_id, category)
        marker = self.conn.key("push", "viewed", event_id) if event_id else self._key(user_id)
        entry = json.dumps([ts, item_id, category], separators=(",", ":"))
        try:
            self.conn.call(
                lambda: self._add(
                    keys=[self._key(user_id), marker],
                    args=[event_id or "", entry, self.ttl_s, self.per_user],
                )
            )
        except StateUnavailableError as exc:
            log.debug("shared views unavailable, counting in process: %s", exc.message)

    def since(self, user_id: str, since: float) -> list[View]:
        try:
            rows = self.conn.call(lambda: self.conn.client.lrange(self._key(user_id), 0, -1))
        except StateUnavailableError:
            return super().since(user_id, since)
        out: list[View] = []
        for row in rows:
            ts, item, cat = json.loads(row)
            if float(ts) >= since:
                out.append((float(ts), str(item), None if cat is None else str(cat)))
        return out

    def forget(self, user_id: str) -> None:
        super().forget(user_id)
        try:
            self.conn.call(lambda: self.conn.client.delete(self._key(user_id)))
        except StateUnavailableError:
            log.warning("could not erase the shared views of a user (Redis unavailable)")
