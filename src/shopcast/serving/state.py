"""Live per-shopper state: the recent events of each user or anonymous session.

``SessionStore`` is the protocol; ``MemorySessions`` is the in-process backend (the
embedded default) and ``shopcast.online.RedisSessions`` the one shared by several API
processes (``[state] url = "redis://..."``); both pass ``tests/online/test_contract.py``.
A shopper's state is loaded lazily from the event log the first time it is needed (so
a restarted server knows what shoppers did before), then kept up to date by every
ingested event, so the very next recommendation request sees what the shopper just did.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from shopcast.domain import Event, EventType
from shopcast.models._base import EVENT_CODES, IntArray

#: Purchase times kept per item (enough to estimate a re-buy cycle).
PURCHASE_HISTORY = 8


@dataclass(slots=True)
class LiveSession:
    """A shopper's recent item events (oldest first), cart, purchases and what we showed.

    ``purchases`` maps every bought item to its latest purchase times; ``cart`` holds
    items added and not since removed or bought; ``shown`` holds, per scene, the items
    returned on the pages of the current listing (page 1 starts a new listing).
    """

    items: deque[str]
    types: deque[EventType]
    ts: deque[float]
    event_ids: deque[str | None]
    purchases: dict[str, list[float]] = field(default_factory=dict)
    cart: dict[str, float] = field(default_factory=dict)
    shown: dict[str, list[str]] = field(default_factory=dict)
    #: Built from the log because the shared state was unreachable (not cached).
    degraded: bool = False

    @property
    def purchased(self) -> set[str]:
        return set(self.purchases)

    def add(self, event: Event) -> None:
        if event.item_id is None or event.type in (EventType.IMPRESSION, EventType.SEARCH):
            return
        if event.event_id in self.event_ids:  # loaded from the log and then observed
            return
        self.event_ids.append(event.event_id)
        self.items.append(event.item_id)
        self.types.append(event.type)
        self.ts.append(event.timestamp)
        if event.type is EventType.PURCHASE:
            times = self.purchases.setdefault(event.item_id, [])
            times.append(event.timestamp)
            times.sort()
            del times[:-PURCHASE_HISTORY]
            self.cart.pop(event.item_id, None)
        elif event.type is EventType.ADD_TO_CART:
            self.cart[event.item_id] = event.timestamp
        elif event.type is EventType.REMOVE_FROM_CART:
            self.cart.pop(event.item_id, None)

    def absorb(self, other: LiveSession) -> None:
        """Merge another session (an anonymous one joining a user at login), time order."""
        rows = sorted(
            [*zip(self.items, self.types, self.ts, self.event_ids, strict=True)]
            + [
                r
                for r in zip(other.items, other.types, other.ts, other.event_ids, strict=True)
                if r[3] not in self.event_ids
            ],
            key=lambda r: r[2],
        )
        for store in (self.items, self.types, self.ts, self.event_ids):
            store.clear()
        for item, kind, ts, event_id in rows:
            self.items.append(item)
            self.types.append(kind)
            self.ts.append(ts)
            self.event_ids.append(event_id)
        for item, times in other.purchases.items():
            merged = sorted({*self.purchases.get(item, []), *times})
            self.purchases[item] = merged[-PURCHASE_HISTORY:]
        for item, ts in other.cart.items():
            if item not in self.purchases or self.purchases[item][-1] < ts:
                self.cart[item] = max(ts, self.cart.get(item, ts))

    def type_codes(self) -> IntArray:
        return np.fromiter((EVENT_CODES[t] for t in self.types), np.int64, len(self.types))

    def to_json(self) -> dict[str, Any]:
        """The events, purchases and cart as JSON (``shown`` is kept apart by backends)."""
        return {
            "e": [
                [i, t.value, ts, e]
                for i, t, ts, e in zip(self.items, self.types, self.ts, self.event_ids, strict=True)
            ],
            "p": self.purchases,
            "c": self.cart,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], length: int) -> LiveSession:
        session = empty_session(length)
        for item, kind, ts, event_id in data.get("e", []):
            session.items.append(item)
            session.types.append(EventType(kind))
            session.ts.append(float(ts))
            session.event_ids.append(event_id)
        session.purchases = {k: [float(t) for t in v] for k, v in data.get("p", {}).items()}
        session.cart = {k: float(v) for k, v in data.get("c", {}).items()}
        return session


def empty_session(length: int) -> LiveSession:
    return LiveSession(
        deque(maxlen=length), deque(maxlen=length), deque(maxlen=length), deque(maxlen=length)
    )


Loader = Callable[[str, int], list[Event]]


class SessionStore(Protocol):
    """Where live sessions live: in process (``MemorySessions``) or in Redis.

    ``get`` never returns a session missing a committed event of the subject: a subject
    unknown to the store is loaded from the log (``Loader``) on first use.
    """

    length: int

    def get(self, subject: str) -> LiveSession: ...

    def observe(self, events: list[Event]) -> None:
        """Apply freshly committed events (called before the API acknowledges them)."""
        ...

    def remember_shown(self, subject: str, scene: str, item_ids: list[str], page: int) -> None:
        """Items returned on a page of ``scene`` (page 1 starts a new listing)."""
        ...

    def merge(self, session_subject: str, user_subject: str) -> None: ...

    def forget(self, subject: str) -> None: ...

    def __len__(self) -> int: ...


class MemorySessions:
    """Bounded LRU of live sessions keyed by subject (``u:<id>`` / ``s:<id>``)."""

    def __init__(self, loader: Loader, *, length: int = 20, capacity: int = 200_000) -> None:
        self._loader = loader
        self.length = length
        self.capacity = capacity
        self._sessions: OrderedDict[str, LiveSession] = OrderedDict()
        self._lock = threading.RLock()

    def _new(self) -> LiveSession:
        return empty_session(self.length)

    def get(self, subject: str) -> LiveSession:
        """The live session, loading the subject's history from the log on a miss.

        The load happens under the lock so that an event committed meanwhile is
        either in the loaded history or applied by ``observe`` afterwards.
        """
        with self._lock:
            session = self._sessions.get(subject)
            if session is not None:
                self._sessions.move_to_end(subject)
                return session
            session = self._new()
            for event in self._loader(subject, 10 * self.length):
                session.add(event)
            self._sessions[subject] = session
            self._evict()
            return session

    def observe(self, events: list[Event]) -> None:
        """Apply freshly committed events to the sessions already in memory.

        A subject not in memory is left alone: its next ``get`` reads the log,
        which already holds these events.
        """
        with self._lock:
            for event in events:
                session = self._sessions.get(event.subject)
                if session is not None:
                    session.add(event)

    def remember_shown(self, subject: str, scene: str, item_ids: list[str], page: int) -> None:
        with self._lock:
            live = self.get(subject)
            earlier = live.shown.get(scene, []) if page > 1 else []
            live.shown[scene] = [*earlier, *item_ids]

    def merge(self, session_subject: str, user_subject: str) -> None:
        """Fold an anonymous session's live state into the user's."""
        with self._lock:
            source = self.get(session_subject)
            self.get(user_subject).absorb(source)
            self._sessions.pop(session_subject, None)

    def forget(self, subject: str) -> None:
        with self._lock:
            self._sessions.pop(subject, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _evict(self) -> None:
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)
