"""Live per-shopper state: the recent events of each user or anonymous session.

``MemorySessions`` is the in-process backend. A shopper's state is loaded lazily
from the event log the first time it is needed (so a restarted server knows what
shoppers did before), then kept up to date by every ingested event, so the very
next recommendation request sees what the shopper just did.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shopcast.domain import Event, EventType
from shopcast.models._base import EVENT_CODES, IntArray


@dataclass(slots=True)
class LiveSession:
    """Recent item events (oldest first) and every item the shopper bought."""

    items: deque[str]
    types: deque[EventType]
    ts: deque[float]
    event_ids: deque[str | None]
    purchased: set[str] = field(default_factory=set)

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
            self.purchased.add(event.item_id)

    def type_codes(self) -> IntArray:
        return np.fromiter((EVENT_CODES[t] for t in self.types), np.int64, len(self.types))


Loader = Callable[[str, int], list[Event]]


class MemorySessions:
    """Bounded LRU of live sessions keyed by subject (``u:<id>`` / ``s:<id>``)."""

    def __init__(self, loader: Loader, *, length: int = 20, capacity: int = 200_000) -> None:
        self._loader = loader
        self.length = length
        self.capacity = capacity
        self._sessions: OrderedDict[str, LiveSession] = OrderedDict()
        self._lock = threading.RLock()

    def _new(self) -> LiveSession:
        n = self.length
        return LiveSession(deque(maxlen=n), deque(maxlen=n), deque(maxlen=n), deque(maxlen=n))

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

    def forget(self, subject: str) -> None:
        with self._lock:
            self._sessions.pop(subject, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _evict(self) -> None:
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)
