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
import polars as pl

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
        self.add_fields(event.item_id, event.type, event.timestamp, event.event_id)

    def extend_rows(
        self,
        items: list[str],
        kinds: list[EventType],
        stamps: list[float],
        event_ids: list[str],
    ) -> None:
        """``add`` of each of these log rows of one shopper into an empty session, in
        time order: what ``add`` would leave, built without an ``Event`` per row
        (the rows' event ids are unique and their item ids and types are session
        ones, as ``MemorySessions.warm`` selects them)."""
        n = self.items.maxlen or len(items)
        self.items.extend(items[-n:])
        self.types.extend(kinds[-n:])
        self.ts.extend(stamps[-n:])
        self.event_ids.extend(event_ids[-n:])
        purchases, cart = self.purchases, self.cart
        buy, put, take = EventType.PURCHASE, EventType.ADD_TO_CART, EventType.REMOVE_FROM_CART
        for item, kind, ts in zip(items, kinds, stamps, strict=True):
            if kind is buy:
                times = purchases.setdefault(item, [])
                times.append(ts)
                times.sort()
                del times[:-PURCHASE_HISTORY]
                cart.pop(item, None)
            elif kind is put:
                cart[item] = ts
            elif kind is take:
                cart.pop(item, None)

    def add_fields(
        self, item_id: str | None, kind: EventType, timestamp: float, event_id: str | None
    ) -> None:
        """``add`` from an event's fields (warming from a frame builds no ``Event``)."""
        if item_id is None or kind in (EventType.IMPRESSION, EventType.SEARCH):
            return
        if event_id in self.event_ids:  # loaded from the log and then observed
            return
        self.event_ids.append(event_id)
        self.items.append(item_id)
        self.types.append(kind)
        self.ts.append(timestamp)
        if kind is EventType.PURCHASE:
            times = self.purchases.setdefault(item_id, [])
            times.append(timestamp)
            times.sort()
            del times[:-PURCHASE_HISTORY]
            self.cart.pop(item_id, None)
        elif kind is EventType.ADD_TO_CART:
            self.cart[item_id] = timestamp
        elif kind is EventType.REMOVE_FROM_CART:
            self.cart.pop(item_id, None)

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

    def warm(self, frame: pl.DataFrame, *, history: int | None = None) -> int:
        """Build, in one columnar pass, the sessions of the users of ``frame`` (rows of
        the event log: ``EventLog.frame`` columns) that are not in memory yet, most
        recently active users first and at most ``capacity``; returns how many.

        Each user gets what ``get`` would load for it from the log: the newest
        ``history`` (default ``10 * length``, as ``get`` asks the loader) events of the
        session's types, in time order. Call it before events are observed (at
        start-up): a session built here does not see events committed after
        ``frame`` was read.
        """
        history = 10 * self.length if history is None else history
        session_kinds = [
            t.value for t in EventType if t not in (EventType.IMPRESSION, EventType.SEARCH)
        ]
        rows = (
            frame.lazy()
            .filter(
                pl.col("user_id").is_not_null()
                & pl.col("item_id").is_not_null()
                & pl.col("type").is_in(session_kinds)
            )
            .sort(["ts", "seq"])
            .group_by("user_id", maintain_order=True)
            .tail(history)
            .select("user_id", "item_id", "type", "ts", "event_id")
            .collect()
        )
        if rows.height == 0:
            return 0
        # Most recently active users last, so the LRU keeps them when over capacity.
        order = (
            rows.group_by("user_id")
            .agg(pl.col("ts").max().alias("last"))
            .sort(["last", "user_id"])
            .tail(self.capacity)
        )
        rows = order.select("user_id").join(rows, on="user_id", how="left", maintain_order="left")
        types = {t.value: t for t in EventType}
        users = rows["user_id"].to_list()
        items = rows["item_id"].to_list()
        kinds: list[EventType] = [types[k] for k in rows["type"].to_list()]
        stamps = rows["ts"].to_list()
        ids = rows["event_id"].to_list()
        built: dict[str, LiveSession] = {}
        start = 0
        last = (rows["user_id"] != rows["user_id"].shift(-1)).fill_null(True)
        for end in last.arg_true().to_list():  # the last row of each user
            session = built[users[start]] = self._new()
            session.extend_rows(
                items[start : end + 1],
                kinds[start : end + 1],
                stamps[start : end + 1],
                ids[start : end + 1],
            )
            start = end + 1
        with self._lock:
            added = 0
            for user, session in built.items():
                subject = f"u:{user}"
                if subject not in self._sessions:
                    self._sessions[subject] = session
                    added += 1
            self._evict()
        return added

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
