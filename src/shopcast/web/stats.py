"""What the dashboard's overview shows: event and request statistics of one process.

``EventStats`` follows the event log incrementally (``EventLog.frame(after_seq=…)``):
the first call reads the whole log once, later calls only the events appended since.
It keeps

- events per minute by type for the last ``LIVE_MINUTES`` minutes (by event timestamp,
  so an imported historical log shows nothing here: the chart is about *now*);
- the last event time of every user/session seen in the live window (active users);
- per UTC day (the latest ``KEEP_DAYS`` days that have events): events by type,
  distinct subjects and subjects who bought (conversion), impressions and clicks (CTR:
  clicks or events carrying a ``recommendation_id`` per impression);
- the set of items with any event and of items shown (impressions) — catalog coverage.

When the log shrank (retention, erasure) the aggregates are rebuilt from scratch.

``RequestStats`` is filled by ``RequestTimer`` (an ASGI middleware): the duration of
every recommendation request of this process, kept for ``LIVE_MINUTES``, from which the
overview computes requests per minute and latency percentiles.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shopcast.storage import Store

LIVE_MINUTES = 60
ACTIVE_WINDOW_S = 300.0  # "active users": an event in the last 5 minutes
DAY_S = 86_400.0
KEEP_DAYS = 60  # days with events kept (with their visitor sets) for the daily panel

#: Requests that count as recommendation requests (latency panel).
RECOMMEND_PATH = re.compile(
    r"^/v1/(users/[^/]+/recommendations|sessions/[^/]+/recommendations|trending"
    r"|items/[^/]+/(similar|bought-together)|cart/recommendations)/?$"
)


@dataclass
class _Day:
    by_type: dict[str, int] = field(default_factory=dict)
    subjects: set[str] = field(default_factory=set)
    buyers: set[str] = field(default_factory=set)
    impressions: int = 0
    clicks: int = 0


class EventStats:
    """Incremental aggregates of one store's event log (thread-safe)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._seq = 0
        self._total = 0
        self._minutes: dict[tuple[int, str], int] = {}  # (epoch minute, type) -> events
        self._last_seen: dict[str, float] = {}  # subject -> latest ts (live window only)
        self._days: dict[int, _Day] = {}
        self._items_seen: set[str] = set()
        self._items_shown: dict[str, float] = {}  # item -> latest impression ts

    def refresh(self) -> None:
        """Fold in the events appended since the last call."""
        with self._lock:
            if self.store.events.count() < self._total:  # deletions: start over
                self._reset()
            frame = self.store.events.frame(after_seq=self._seq)
            if frame.height:
                self._fold(frame)
                self._seq = int(frame["seq"].max())  # type: ignore[arg-type]
                self._total += frame.height
            self._prune()

    def _fold(self, frame: pl.DataFrame) -> None:
        now = self.clock()
        live_from = now - LIVE_MINUTES * 60
        frame = frame.with_columns(
            subject=pl.when(pl.col("user_id").is_not_null())
            .then(pl.lit("u:") + pl.col("user_id"))
            .otherwise(pl.lit("s:") + pl.col("session_id")),
            day=(pl.col("ts") // DAY_S).cast(pl.Int64),
            minute=(pl.col("ts") // 60).cast(pl.Int64),
            clicked=(pl.col("type") == "click") | pl.col("recommendation_id").is_not_null(),
        )
        live = frame.filter(pl.col("ts") >= live_from)
        for (minute, kind), n in _counts(live, ["minute", "type"]).items():
            self._minutes[(minute, kind)] = self._minutes.get((minute, kind), 0) + n
        for subject, ts in live.group_by("subject").agg(pl.col("ts").max()).iter_rows():
            if subject is not None and ts > self._last_seen.get(subject, 0.0):
                self._last_seen[subject] = ts
        for (day, kind), n in _counts(frame, ["day", "type"]).items():
            d = self._days.setdefault(day, _Day())
            d.by_type[kind] = d.by_type.get(kind, 0) + n
            if kind == "impression":
                d.impressions += n
        clicks = frame.filter(pl.col("clicked") & (pl.col("type") != "impression"))
        for (day,), n in _counts(clicks, ["day"]).items():
            self._days.setdefault(day, _Day()).clicks += n
        people = frame.filter((pl.col("type") != "impression") & pl.col("subject").is_not_null())
        per_day = people.group_by("day").agg(
            pl.col("subject").unique().alias("subjects"),
            pl.col("subject").filter(pl.col("type") == "purchase").unique().alias("buyers"),
        )
        for day, subjects, buyers in per_day.iter_rows():
            d = self._days.setdefault(day, _Day())
            d.subjects.update(subjects)
            d.buyers.update(buyers)
        items = frame.filter(pl.col("item_id").is_not_null())
        shown = items.filter(pl.col("type") == "impression")
        self._items_seen.update(items.filter(pl.col("type") != "impression")["item_id"].to_list())
        for item, ts in shown.group_by("item_id").agg(pl.col("ts").max()).iter_rows():
            if ts > self._items_shown.get(item, 0.0):
                self._items_shown[item] = ts

    def _prune(self) -> None:
        for day in sorted(self._days)[:-KEEP_DAYS]:  # only the latest days are shown
            del self._days[day]
        now = self.clock()
        oldest_minute = int((now - LIVE_MINUTES * 60) // 60)
        for key in [k for k in self._minutes if k[0] < oldest_minute]:
            del self._minutes[key]
        cutoff = now - LIVE_MINUTES * 60
        for subject in [s for s, ts in self._last_seen.items() if ts < cutoff]:
            del self._last_seen[subject]

    # -- views ------------------------------------------------------------------------

    def events_per_minute(self) -> dict[str, list[int]]:
        """Per event type, counts for the last ``LIVE_MINUTES`` minutes (oldest first)."""
        now_minute = int(self.clock() // 60)
        first = now_minute - LIVE_MINUTES + 1
        with self._lock:
            kinds = sorted({k for _, k in self._minutes})
            return {
                kind: [self._minutes.get((m, kind), 0) for m in range(first, now_minute + 1)]
                for kind in kinds
            }

    def active_users(self, window_s: float = ACTIVE_WINDOW_S) -> dict[str, int]:
        since = self.clock() - window_s
        with self._lock:
            active = [s for s, ts in self._last_seen.items() if ts >= since]
        return {
            "users": sum(1 for s in active if s.startswith("u:")),
            "sessions": sum(1 for s in active if s.startswith("s:")),
            "window_s": int(window_s),
        }

    def daily(self, days: int = 30) -> list[dict[str, Any]]:
        """The last ``days`` days *that have events* (historical logs end in the past)."""
        with self._lock:
            keys = sorted(self._days)[-days:]
            out = []
            for day in keys:
                d = self._days[day]
                visitors = len(d.subjects)
                out.append(
                    {
                        "day": time.strftime("%Y-%m-%d", time.gmtime(day * DAY_S)),
                        "events": sum(n for k, n in d.by_type.items() if k != "impression"),
                        "by_type": dict(sorted(d.by_type.items())),
                        "visitors": visitors,
                        "buyers": len(d.buyers),
                        "conversion": len(d.buyers) / visitors if visitors else None,
                        "impressions": d.impressions,
                        "clicks": d.clicks,
                        "ctr": d.clicks / d.impressions if d.impressions else None,
                    }
                )
            return out

    def coverage(self, catalog_size: int, window_s: float = DAY_S) -> dict[str, Any]:
        """Share of the catalog with any event, and shown in recommendations lately."""
        since = self.clock() - window_s
        with self._lock:
            seen = len(self._items_seen)
            shown = sum(1 for ts in self._items_shown.values() if ts >= since)
        return {
            "catalog_items": catalog_size,
            "items_with_events": seen,
            "items_recommended": shown,
            "recommended_window_s": int(window_s),
            "event_coverage": seen / catalog_size if catalog_size else None,
            "recommendation_coverage": shown / catalog_size if catalog_size else None,
        }

    @property
    def total_events(self) -> int:
        return self._total


def _counts(frame: pl.DataFrame, keys: list[str]) -> dict[tuple[Any, ...], int]:
    if not frame.height:
        return {}
    grouped = frame.group_by(keys).len()
    return {tuple(row[:-1]): int(row[-1]) for row in grouped.iter_rows()}


class RequestStats:
    """Durations of recommendation requests in the last ``LIVE_MINUTES`` (this process)."""

    def __init__(self, clock: Callable[[], float] = time.time, capacity: int = 200_000) -> None:
        self.clock = clock
        self._samples: deque[tuple[float, float, int]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.total = 0

    def record(self, ms: float, status: int) -> None:
        with self._lock:
            self._samples.append((self.clock(), ms, status))
            self.total += 1

    def _recent(self, window_s: float) -> list[tuple[float, float, int]]:
        since = self.clock() - window_s
        with self._lock:
            while self._samples and self._samples[0][0] < self.clock() - LIVE_MINUTES * 60:
                self._samples.popleft()
            return [s for s in self._samples if s[0] >= since]

    def summary(self, window_s: float = 300.0) -> dict[str, Any]:
        """Count, errors and latency percentiles (ms) over the last ``window_s``."""
        recent = self._recent(window_s)
        ms = np.array([s[1] for s in recent], dtype=np.float64)
        pct = (
            {f"p{q}": round(float(np.percentile(ms, q)), 2) for q in (50, 90, 95, 99)}
            if ms.size
            else {f"p{q}": None for q in (50, 90, 95, 99)}
        )
        return {
            "window_s": int(window_s),
            "requests": int(ms.size),
            "errors": sum(1 for s in recent if s[2] >= 500),
            "per_minute": round(ms.size * 60.0 / window_s, 2),
            "latency_ms": pct,
            "total": self.total,
        }

    def per_minute(self) -> dict[str, list[float | None]]:
        """Requests, p50 and p95 latency for each of the last ``LIVE_MINUTES`` minutes."""
        now_minute = int(self.clock() // 60)
        first = now_minute - LIVE_MINUTES + 1
        buckets: dict[int, list[float]] = {}
        for ts, ms, _ in self._recent(LIVE_MINUTES * 60.0):
            buckets.setdefault(int(ts // 60), []).append(ms)
        out: dict[str, list[float | None]] = {"requests": [], "p50": [], "p95": []}
        for m in range(first, now_minute + 1):
            values = buckets.get(m)
            out["requests"].append(float(len(values or [])))
            out["p50"].append(float(np.percentile(values, 50)) if values else None)
            out["p95"].append(float(np.percentile(values, 95)) if values else None)
        return out


def request_stats(app: Any) -> RequestStats:
    """The app's recorder (created on first use)."""
    stats: RequestStats | None = getattr(app.state, "request_stats", None)
    if stats is None:
        stats = RequestStats()
        app.state.request_stats = stats
    return stats


class RequestTimer:
    """ASGI middleware: times recommendation requests into ``app.state.request_stats``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not RECOMMEND_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            stats = request_stats(scope["app"])
            stats.record((time.perf_counter() - started) * 1000.0, status)
