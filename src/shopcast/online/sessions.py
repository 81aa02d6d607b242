"""Live sessions in Redis, shared by every API process (``SessionStore``).

Per subject (``u:<id>`` / ``s:<id>``), under the prefix:

- ``sess:<subject>``: the session's events, purchases and cart as JSON, with a TTL
  (``state.session_ttl_s``, renewed by every write);
- ``shown:<subject>``: a hash scene → JSON list of the items shown on the current
  listing's pages;
- ``sessions``: a sorted set subject → expiry time (the live-session count).

Updates are compare-and-set in a Lua script (the JSON read, ``LiveSession.add`` in
Python, then written only if nobody changed it meanwhile; retried otherwise), so the
semantics are exactly the in-memory backend's. Every read and write is one pipelined
round trip plus the script.

A subject that Redis does not hold is loaded from the event log on first ``get``.
``observe`` on such a subject stores a *partial* session (just the new events); the
next ``get`` loads the log and merges it in (deduplicated by event id), so an event
committed by one process while another loads the subject's history is never lost.

When Redis is unreachable, ``get`` builds the session from the log (fresh, uncached,
``degraded`` set: the response names ``live_state``), writes are skipped and the
subjects they touched are remembered (``dirty``): ``recover`` drops their stale Redis
copies once Redis is back, so they reload from the log.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from typing import Any

from shopcast.domain import Event, EventType
from shopcast.errors import StateUnavailableError
from shopcast.online._redis import RedisConnection
from shopcast.serving.state import LiveSession, Loader, empty_session

_CAS = """
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] ~= '') or (cur ~= false and cur ~= ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
return 1
"""

_SHOWN = """
local new = ARGV[2]
if tonumber(ARGV[3]) > 1 then
  local cur = redis.call('HGET', KEYS[1], ARGV[1])
  if cur and cur ~= '[]' then
    if new == '[]' then new = cur else new = string.sub(cur, 1, -2) .. ',' .. string.sub(new, 2) end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], new)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

#: Compare-and-set attempts before giving up on a contended session.
_ATTEMPTS = 16
_IGNORED = (EventType.IMPRESSION, EventType.SEARCH)


class RedisSessions:
    """``SessionStore`` in Redis (see the module docstring)."""

    def __init__(
        self, conn: RedisConnection, loader: Loader, *, length: int = 20, ttl_s: float = 604800.0
    ) -> None:
        self.conn = conn
        self._loader = loader
        self.length = length
        self.ttl_ms = int(ttl_s * 1000)
        self._cas = conn.client.register_script(_CAS)
        self._shown = conn.client.register_script(_SHOWN)
        self._index = conn.key("sessions")
        self.dirty: set[str] = set()
        self._dirty_lock = threading.Lock()

    # -- keys --------------------------------------------------------------------------

    def _keys(self, subject: str) -> tuple[str, str]:
        return self.conn.key("sess", subject), self.conn.key("shown", subject)

    def _load(self, subject: str) -> LiveSession:
        session = empty_session(self.length)
        for event in self._loader(subject, 10 * self.length):
            session.add(event)
        return session

    def _write(
        self, subject: str, expected: str | None, session: LiveSession, partial: bool
    ) -> str | None:
        """Compare-and-set; the JSON written, or None when someone changed it first."""
        data = session.to_json()
        if partial:
            data["partial"] = True
        new = json.dumps(data, separators=(",", ":"))
        key, shown = self._keys(subject)
        expiry = time.time() + self.ttl_ms / 1000
        done = self._cas(
            keys=[key, shown, self._index],
            args=[expected or "", new, self.ttl_ms, expiry, subject],
        )
        return new if done else None

    # -- reads -------------------------------------------------------------------------

    def _fetch(self, subject: str) -> tuple[str, LiveSession]:
        """The stored JSON and the session, loading (and merging) the log when needed."""
        key, shown_key = self._keys(subject)
        for _ in range(_ATTEMPTS):
            pipe = self.conn.client.pipeline(transaction=False)
            pipe.get(key)
            pipe.hgetall(shown_key)
            raw, shown = pipe.execute()
            data: dict[str, Any] | None = json.loads(raw) if raw is not None else None
            if data is not None and not data.get("partial"):
                session = LiveSession.from_json(data, self.length)
            else:
                session = self._load(subject)
                if data is not None:  # events observed before anyone loaded the subject
                    session.absorb(LiveSession.from_json(data, self.length))
                written = self._write(subject, raw, session, partial=False)
                if written is None:
                    continue
                raw = written
            session.shown = {scene: json.loads(ids) for scene, ids in shown.items()}
            return raw, session
        raise StateUnavailableError(f"live session {subject!r} is too contended")

    def get(self, subject: str) -> LiveSession:
        try:
            return self.conn.call(lambda: self._fetch(subject)[1])
        except StateUnavailableError:
            session = self._load(subject)  # the log is the truth: fresh, not cached
            session.degraded = True
            return session

    def __len__(self) -> int:
        def count() -> int:
            pipe = self.conn.client.pipeline(transaction=False)
            pipe.zremrangebyscore(self._index, "-inf", time.time())
            pipe.zcard(self._index)
            return int(pipe.execute()[1])

        try:
            return self.conn.call(count)
        except StateUnavailableError:
            return 0

    # -- writes ------------------------------------------------------------------------

    def observe(self, events: list[Event]) -> None:
        by_subject: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            if event.item_id is not None and event.type not in _IGNORED:
                by_subject[event.subject].append(event)
        if not by_subject:
            return
        try:
            self.conn.call(lambda: self._observe(by_subject))
        except StateUnavailableError:
            with self._dirty_lock:
                self.dirty.update(by_subject)

    def _observe(self, by_subject: dict[str, list[Event]]) -> None:
        subjects = list(by_subject)
        pipe = self.conn.client.pipeline(transaction=False)
        for subject in subjects:
            pipe.get(self._keys(subject)[0])
        raws: list[str | None] = pipe.execute()
        for subject, raw in zip(subjects, raws, strict=True):
            for _ in range(_ATTEMPTS):
                data = json.loads(raw) if raw is not None else {"partial": True}
                session = LiveSession.from_json(data, self.length)
                for event in by_subject[subject]:
                    session.add(event)
                if self._write(subject, raw, session, partial=bool(data.get("partial"))):
                    break
                time.sleep(random.uniform(0, 0.002))  # another writer won: read again
                raw = self.conn.client.get(self._keys(subject)[0])
            else:  # still contended: drop the copy, the next get reloads it from the log
                self._delete(subject)

    def remember_shown(self, subject: str, scene: str, item_ids: list[str], page: int) -> None:
        key = self._keys(subject)[1]
        ids = json.dumps(item_ids, separators=(",", ":"))
        self.conn.call(lambda: self._shown(keys=[key], args=[scene, ids, page, self.ttl_ms]))

    def merge(self, session_subject: str, user_subject: str) -> None:
        def run() -> None:
            for _ in range(_ATTEMPTS):
                raw, user = self._fetch(user_subject)
                _, anonymous = self._fetch(session_subject)
                user.absorb(anonymous)
                if self._write(user_subject, raw, user, partial=False):
                    self._delete(session_subject)
                    return
            raise StateUnavailableError(f"live session {user_subject!r} is too contended")

        try:
            self.conn.call(run)
        except StateUnavailableError:
            with self._dirty_lock:
                self.dirty.update((session_subject, user_subject))

    def forget(self, subject: str) -> None:
        try:
            self.conn.call(lambda: self._delete(subject))
        except StateUnavailableError:
            with self._dirty_lock:
                self.dirty.add(subject)

    def _delete(self, subject: str) -> None:
        pipe = self.conn.client.pipeline(transaction=True)
        pipe.delete(*self._keys(subject))
        pipe.zrem(self._index, subject)
        pipe.execute()

    def recover(self) -> int:
        """Drop the Redis copies of the sessions written while Redis was unreachable
        (they reload from the log); how many. Raises StateUnavailableError if still down."""
        with self._dirty_lock:
            dirty, self.dirty = self.dirty, set()
        try:
            for subject in dirty:
                self.conn.call(lambda s=subject: self._delete(s))  # type: ignore[misc]
        except StateUnavailableError:
            with self._dirty_lock:
                self.dirty.update(dirty)
            raise
        return len(dirty)
