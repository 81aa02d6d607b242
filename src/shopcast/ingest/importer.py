"""Bulk import into a ``Store``: events (cleaned, appended chunk by chunk), items, users
and whole datasets, each summarized by an ``ImportSummary``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from shopcast.domain import Item, User
from shopcast.ingest.bulk import clean_events
from shopcast.ingest.datasets import DatasetFrames, load_dataset
from shopcast.storage import Store

__all__ = [
    "ImportSummary",
    "Progress",
    "import_dataset",
    "import_events",
    "import_frames",
    "import_items",
    "import_users",
]

#: Called with the number of input rows handled so far.
Progress = Callable[[int], None]


@dataclass(slots=True)
class ImportSummary:
    """What an import did. ``rows_read`` = ``accepted`` + ``duplicates`` + rejected rows;
    ``items`` / ``users`` are the catalog and profile records upserted alongside events;
    ``timings`` splits ``seconds`` (``load``, ``clean``, ``store``)."""

    rows_read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    items: int = 0
    users: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rows_per_s": self.rows_per_s}


def _add(counts: dict[str, int], more: Mapping[str, int]) -> None:
    for reason, n in more.items():
        counts[reason] = counts.get(reason, 0) + n


def import_events(
    store: Store,
    raw_frame: pl.DataFrame,
    progress: Progress | None = None,
    chunk_rows: int = 50_000,
    *,
    now: float | None = None,
) -> ImportSummary:
    """Clean ``raw_frame`` (``clean_events``) and append it chunk by chunk; duplicates
    are the rows whose ``event_id`` the store already had (or saw earlier in the frame).
    Missing timestamps all get ``now`` (default: the start of the import)."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    summary = ImportSummary(rows_read=raw_frame.height, timings={"clean": 0.0, "store": 0.0})
    done = 0
    for chunk in raw_frame.iter_slices(max(1, chunk_rows)):
        t0 = time.perf_counter()
        cleaned = clean_events(chunk, now=now)
        t1 = time.perf_counter()
        if cleaned.frame.height:
            result = store.events.append_frame(cleaned.frame)
            summary.accepted += result.accepted
            summary.duplicates += result.duplicates
        summary.timings["clean"] += t1 - t0
        summary.timings["store"] += time.perf_counter() - t1
        _add(summary.rejected, cleaned.rejected)
        done += chunk.height
        if progress is not None:
            progress(done)
    summary.rejected = dict(sorted(summary.rejected.items()))
    summary.seconds = time.perf_counter() - started
    return summary


def _upsert(
    repo_upsert: Callable[[Sequence[Any]], int],
    records: Sequence[Item] | Sequence[User],
    key: str,
    rejected: Mapping[str, int] | None,
) -> ImportSummary:
    """Upsert the last record of each key; earlier ones of the same key are duplicates."""
    started = time.perf_counter()
    latest = {getattr(r, key): r for r in records}
    repo_upsert(list(latest.values()))
    rejected = dict(rejected or {})
    return ImportSummary(
        rows_read=len(records) + sum(rejected.values()),
        accepted=len(latest),
        duplicates=len(records) - len(latest),
        rejected=rejected,
        seconds=time.perf_counter() - started,
    )


def import_items(
    store: Store, items: Sequence[Item], *, rejected: Mapping[str, int] | None = None
) -> ImportSummary:
    """Upsert catalog items (``rejected``: counts from reading them, for the summary)."""
    summary = _upsert(store.items.upsert, items, "item_id", rejected)
    summary.items = summary.accepted
    return summary


def import_users(
    store: Store, users: Sequence[User], *, rejected: Mapping[str, int] | None = None
) -> ImportSummary:
    """Upsert user profiles (``rejected``: counts from reading them, for the summary)."""
    summary = _upsert(store.users.upsert, users, "user_id", rejected)
    summary.users = summary.accepted
    return summary


def import_frames(
    store: Store,
    frames: DatasetFrames,
    progress: Progress | None = None,
    chunk_rows: int = 50_000,
) -> ImportSummary:
    """Import a loaded dataset: items, users, then events. Source rows the loader
    skipped count as rejected, so ``rows_read`` is the dataset's row count."""
    items = import_items(store, frames.items)
    users = import_users(store, frames.users)
    summary = import_events(store, frames.events, progress, chunk_rows)
    summary.rows_read += sum(frames.skipped.values())
    _add(summary.rejected, frames.skipped)
    summary.rejected = dict(sorted(summary.rejected.items()))
    summary.items, summary.users = items.accepted, users.accepted
    summary.seconds += items.seconds + users.seconds
    summary.timings["store"] += items.seconds + users.seconds
    return summary


def import_dataset(
    store: Store,
    name: str,
    path: Path | str | None = None,
    data_path: Path | str | None = None,
    progress: Progress | None = None,
    chunk_rows: int = 50_000,
) -> ImportSummary:
    """Load a known dataset (``load_dataset``) and import it (``import_frames``)."""
    started = time.perf_counter()
    frames = load_dataset(name, path=path, data_path=data_path)
    load_seconds = time.perf_counter() - started
    summary = import_frames(store, frames, progress, chunk_rows)
    summary.timings["load"] = load_seconds
    summary.seconds += load_seconds
    return summary
