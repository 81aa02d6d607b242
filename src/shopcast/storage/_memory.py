"""An in-process backend (``memory://``) for tests and demos: nothing survives the process.

It behaves like the SQLite backend: same deduplication, ordering, seq numbers and
frame layout; records are kept as JSON documents so callers never share objects.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from typing import Generic

import polars as pl

from shopcast.domain import Event, Item, User
from shopcast.storage._protocols import AppendResult, Catalog, EventLog, Profiles, T
from shopcast.storage._rows import (
    Row,
    check_limit,
    clean_frame,
    event_row,
    row_event,
    rows_frame,
    subject_filter,
)

_USER, _SESSION = 2, 3  # positions of user_id and session_id in a row


class MemoryEventLog:
    """Rows by seq (seqs increase and are never reused) with per-user and per-session indexes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[int, Row] = {}
        self._seq_of: dict[str, int] = {}  # event_id -> seq
        self._by_user: dict[str, set[int]] = {}
        self._by_session: dict[str, set[int]] = {}
        self._next_seq = 1

    def append(self, events: Sequence[Event]) -> AppendResult:
        """Store new events; ``last_seq`` is the log's highest seq."""
        rows = [event_row(e) for e in events]
        with self._lock:
            stored = [i for i, row in enumerate(rows) if self._insert(row)]
            return AppendResult(len(stored), len(rows) - len(stored), stored, self._last_seq())

    def append_batches(self, batches: Sequence[Sequence[Event]]) -> list[AppendResult]:
        """Several appends at once, as if one after the other (see the SQLite backend)."""
        rows = [[event_row(e) for e in batch] for batch in batches]
        with self._lock:
            stored = [[i for i, row in enumerate(batch) if self._insert(row)] for batch in rows]
            last = self._last_seq()
        return [
            AppendResult(len(new), len(batch) - len(new), new, last)
            for batch, new in zip(rows, stored, strict=True)
        ]

    def append_frame(self, frame: pl.DataFrame) -> AppendResult:
        """Store new rows of a clean frame; ``stored`` is left empty."""
        clean = clean_frame(frame)
        with self._lock:
            accepted = sum(self._insert(row) for row in clean.iter_rows())
            return AppendResult(accepted, clean.height - accepted, [], self._last_seq())

    def _insert(self, row: Row) -> bool:
        if row[0] in self._seq_of:
            return False
        seq = self._next_seq
        self._next_seq += 1
        self._rows[seq] = row
        self._seq_of[row[0]] = seq
        for index, key in ((self._by_user, row[_USER]), (self._by_session, row[_SESSION])):
            if key is not None:
                index.setdefault(key, set()).add(seq)
        return True

    def _last_seq(self) -> int:
        return next(reversed(self._rows), 0)

    def scan(
        self,
        *,
        subject: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
        types: Collection[str] | None = None,
    ) -> list[tuple[int, Event]]:
        """``(seq, event)`` pairs after ``after_seq`` ordered by ``(ts, seq)``."""
        check_limit(limit)
        with self._lock:
            if subject is None:
                seqs: Sequence[int] | set[int] = list(self._rows)
            else:
                column, key = subject_filter(subject)
                index = self._by_user if column == "user_id" else self._by_session
                seqs = index.get(key, set())
            rows = [(s, self._rows[s]) for s in seqs if s > after_seq]
        if types is not None:
            kinds = {str(t) for t in types}
            rows = [r for r in rows if r[1][1] in kinds]
        rows.sort(key=lambda r: (r[1][5], r[0]), reverse=newest_first)
        return [(seq, row_event(row)) for seq, row in rows[:limit]]

    def frame(self, *, after_seq: int = 0) -> pl.DataFrame:
        """Events after ``after_seq`` as a ``seq`` + ``EVENT_COLUMNS`` frame, in seq order."""
        with self._lock:
            rows = [(s, *row) for s, row in self._rows.items() if s > after_seq]
        return rows_frame(rows)

    def delete_user(self, user_id: str) -> int:
        with self._lock:
            seqs = self._by_user.pop(user_id, set())
            for seq in seqs:
                row = self._rows.pop(seq)
                del self._seq_of[row[0]]
                if row[_SESSION] is not None:
                    self._by_session[row[_SESSION]].discard(seq)
            return len(seqs)

    def delete_before(self, ts: float) -> int:
        with self._lock:
            old = [seq for seq, row in self._rows.items() if row[5] < ts]
            for seq in old:
                row = self._rows.pop(seq)
                del self._seq_of[row[0]]
                for index, key in ((self._by_user, row[_USER]), (self._by_session, row[_SESSION])):
                    if key is not None:
                        index[key].discard(seq)
                        if not index[key]:
                            del index[key]
            return len(old)

    def assign_session(self, session_id: str, user_id: str) -> int:
        with self._lock:
            changed = 0
            for seq in sorted(self._by_session.get(session_id, set())):
                row = self._rows[seq]
                if row[_USER] is None:
                    self._rows[seq] = (*row[:_USER], user_id, *row[_USER + 1 :])
                    self._by_user.setdefault(user_id, set()).add(seq)
                    changed += 1
            return changed

    def count(self) -> int:
        with self._lock:
            return len(self._rows)


class MemoryRepository(Generic[T]):
    """Records of one model kept as JSON documents by key."""

    def __init__(self, key: str, model: type[T]) -> None:
        self._lock = threading.Lock()
        self._docs: dict[str, str] = {}
        self._key = key
        self._model: type[T] = model

    def upsert(self, records: Sequence[T]) -> int:
        """Insert or replace every record; returns how many were written."""
        docs = {getattr(r, self._key): r.model_dump_json() for r in records}
        with self._lock:
            self._docs.update(docs)
        return len(records)

    def get(self, key: str) -> T | None:
        with self._lock:
            doc = self._docs.get(key)
        return None if doc is None else self._model.model_validate_json(doc)

    def get_many(self, keys: Sequence[str]) -> dict[str, T]:
        """The records found, by key; unknown keys are left out."""
        with self._lock:
            docs = {k: self._docs[k] for k in keys if k in self._docs}
        return {k: self._model.model_validate_json(doc) for k, doc in docs.items()}

    def scan(self) -> Iterator[T]:
        """Every record in key order, as of the call."""
        with self._lock:
            docs = [self._docs[k] for k in sorted(self._docs)]
        return (self._model.model_validate_json(doc) for doc in docs)

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._docs.pop(key, None) is not None

    def count(self) -> int:
        with self._lock:
            return len(self._docs)


class MemoryStore:
    """Events, items and users in process memory; ``url`` is any ``memory://`` URL."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.events: EventLog = MemoryEventLog()
        self.items: Catalog = MemoryRepository("item_id", Item)
        self.users: Profiles = MemoryRepository("user_id", User)

    def close(self) -> None:
        """Nothing to release; the data stays readable until the store is dropped."""
