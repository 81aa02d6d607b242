"""Storage backends chosen by URL: ``sqlite:///path.db`` (default), ``memory://`` or
``postgresql://user@host:port/db`` (needs the ``scale`` extra)."""

from __future__ import annotations

from collections.abc import Sequence

from shopcast.domain import Event
from shopcast.errors import MissingDependencyError, UnknownBackendError
from shopcast.storage._protocols import (
    EVENT_COLUMNS,
    AppendResult,
    Catalog,
    EventLog,
    Profiles,
    Repository,
    Store,
)

__all__ = [
    "EVENT_COLUMNS",
    "AppendResult",
    "Catalog",
    "EventLog",
    "Profiles",
    "Repository",
    "Store",
    "append_batches",
    "open_store",
]


def append_batches(log: EventLog, batches: Sequence[Sequence[Event]]) -> list[AppendResult]:
    """Append several batches as one group commit where the backend can (one transaction,
    one fsync: ``append_batches`` of the SQLite, PostgreSQL and memory logs), else one
    ``append`` after the other. Results as if appended one after the other."""
    group = getattr(log, "append_batches", None)
    if group is not None:
        results: list[AppendResult] = group(batches)
        return results
    return [log.append(batch) for batch in batches]


def open_store(url: str) -> Store:
    """Open the backend named by the URL's scheme (imported only when used)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        from shopcast.storage._sqlite import SqliteStore

        return SqliteStore(url)
    if scheme == "memory":
        from shopcast.storage._memory import MemoryStore

        return MemoryStore(url)
    if scheme in ("postgresql", "postgres"):
        try:
            from shopcast.storage._postgres import PostgresStore
        except ImportError as exc:
            raise MissingDependencyError("psycopg", "scale") from exc
        return PostgresStore(url)
    raise UnknownBackendError(
        f"no storage backend for {url!r}; use sqlite:///path.db, memory:// or postgresql://..."
    )
