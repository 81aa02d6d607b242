"""Storage roles: the event log, the catalog and the user profiles.

Every backend implements these protocols and passes ``tests/storage/test_contract.py``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from shopcast.domain import Event, Item, User

if TYPE_CHECKING:
    import polars as pl

#: Canonical columns of an event frame (``EventLog.frame`` / ``EventLog.append_frame``).
#: ``ts`` is float epoch seconds UTC, ``context`` is JSON text (or null).
EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "type",
    "user_id",
    "session_id",
    "item_id",
    "ts",
    "value",
    "quantity",
    "price",
    "query",
    "recommendation_id",
    "context",
)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did. ``stored`` are the batch positions that were new."""

    accepted: int
    duplicates: int
    stored: list[int] = field(default_factory=list)
    last_seq: int = 0


class EventLog(Protocol):
    """Durable, append-only, deduplicated by ``event_id``; ``append`` returns after commit."""

    def append(self, events: Sequence[Event]) -> AppendResult: ...

    def append_frame(self, frame: pl.DataFrame) -> AppendResult:
        """Bulk append of an already-clean frame with ``EVENT_COLUMNS``."""
        ...

    def scan(
        self,
        *,
        subject: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
        types: Collection[str] | None = None,
    ) -> list[tuple[int, Event]]:
        """``(seq, event)`` pairs, ordered by time; ``subject`` is ``u:<id>`` or ``s:<id>``;
        ``types`` keeps only events of those types (``EventType`` values)."""
        ...

    def frame(self, *, after_seq: int = 0) -> pl.DataFrame:
        """All events after ``after_seq`` as a frame (``seq`` + ``EVENT_COLUMNS``), seq order."""
        ...

    def delete_user(self, user_id: str) -> int: ...

    def delete_before(self, ts: float) -> int:
        """Delete every event with a timestamp before ``ts`` (retention); returns how many."""
        ...

    def assign_session(self, session_id: str, user_id: str) -> int:
        """Attribute an anonymous session's events to a user (login); returns how many."""
        ...

    def count(self) -> int: ...


T = TypeVar("T", Item, User)


class Repository(Protocol[T]):
    """Keyed records (the catalog of items, the user profiles)."""

    def upsert(self, records: Sequence[T]) -> int: ...

    def get(self, key: str) -> T | None: ...

    def get_many(self, keys: Sequence[str]) -> dict[str, T]: ...

    def scan(self) -> Iterator[T]: ...

    def delete(self, key: str) -> bool: ...

    def count(self) -> int: ...


class Catalog(Repository[Item], Protocol):
    pass


class Profiles(Repository[User], Protocol):
    pass


class Store(Protocol):
    """The three roles opened together from one URL."""

    url: str
    events: EventLog
    items: Catalog
    users: Profiles

    def close(self) -> None: ...
